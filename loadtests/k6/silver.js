// Silver tier: 200 virtual users on the shared mix (see lib/mix.js for the mix,
// the environment variables and the thresholds).
//   k6 run -e ADMIN_API_KEY=$(cat /tmp/shortener-stack/admin-api-key) loadtests/k6/silver.js
// or loadtests/k6/run.sh silver
import { tierOptions, setup as createLinks, mix } from './lib/mix.js';

export const options = tierOptions('silver');

export function setup() {
  return createLinks();
}

export default function (data) {
  mix(data);
}
