// Bronze tier: 50 virtual users on the shared mix (see lib/mix.js for the mix,
// the environment variables and the thresholds).
//   k6 run -e ADMIN_API_KEY=$(cat /tmp/shortener-stack/admin-api-key) loadtests/k6/bronze.js
// or loadtests/k6/run.sh bronze
import { tierOptions, setup as createLinks, mix } from './lib/mix.js';

export const options = tierOptions('bronze');

export function setup() {
  return createLinks();
}

export default function (data) {
  mix(data);
}
