// The traffic mix shared by the bronze, silver and gold tiers.
//
// Each iteration is one request, drawn at random:
//   80 %  GET /{short_code}          redirect (302, not followed)
//    8 %  POST /urls                 create
//    5 %  GET /urls/{id}             read
//    4 %  GET /urls?page=N           list
//    3 %  GET /urls/{id}/stats       stats
// then a think time (THINK_MS, mean, uniform 0.5x-1.5x; 0 = flat out).
//
// Environment:
//   BASE_URL        default http://127.0.0.1:18080 (the stack's nginx)
//   ADMIN_API_KEY   Bearer key for the management endpoints (not needed with AUTH_MODE=open)
//   DURATION        steady-state duration, default 60s
//   RAMP            ramp-up to the tier's VUs, default 10s
//   VUS             override the tier's VU count
//   THINK_MS        mean pause between a VU's requests, default 500
//   CODES           short links created in setup() for the redirects, default 200
import http from 'k6/http';
import { check, fail, sleep } from 'k6';
import exec from 'k6/execution';

const BASE = (__ENV.BASE_URL || 'http://127.0.0.1:18080').replace(/\/$/, '');
const KEY = __ENV.ADMIN_API_KEY || '';
const THINK_MS = Number(__ENV.THINK_MS === undefined ? 500 : __ENV.THINK_MS);
const CODES = Number(__ENV.CODES || 200);

// A 302 is the redirect working; 200 and 201 everything else. Anything else
// (404, 5xx, a timeout) counts in http_req_failed.
http.setResponseCallback(http.expectedStatuses(200, 201, 302));

const mgmt = {
  headers: KEY ? { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' }
    : { 'Content-Type': 'application/json' },
};

// Per tier: VUs and latency budgets. Every tier must answer every request
// (http_req_failed == 0) and keep p95 under 100 ms, the gold promise; the
// redirect, being the hot path, has its own tighter bound.
const TIERS = {
  bronze: { vus: 50, p95: 100, p99: 200, redirectP95: 50 },
  silver: { vus: 200, p95: 100, p99: 250, redirectP95: 75 },
  gold: { vus: 500, p95: 100, p99: 300, redirectP95: 100 },
};

export function tierOptions(name) {
  const tier = TIERS[name];
  if (!tier) throw new Error(`unknown tier ${name}`);
  const vus = Number(__ENV.VUS || tier.vus);
  return {
    scenarios: {
      [name]: {
        executor: 'ramping-vus',
        startVUs: 0,
        stages: [
          { duration: __ENV.RAMP || '10s', target: vus },
          { duration: __ENV.DURATION || '60s', target: vus },
        ],
        gracefulRampDown: '5s',
        gracefulStop: '10s',
      },
    },
    // Count a 302 as the answer: never follow it (the target is off-machine).
    maxRedirects: 0,
    // k6's own agent names its web site, which the service takes for a bot's (recorded as
    // a bot visit, not a click); the load stands for people clicking.
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) load-test',
    discardResponseBodies: true,
    setupTimeout: '120s',
    summaryTrendStats: ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
    thresholds: {
      http_req_failed: ['rate==0'],
      checks: ['rate==1'],
      http_req_duration: [`p(95)<${tier.p95}`, `p(99)<${tier.p99}`],
      'http_req_duration{kind:redirect}': [`p(95)<${tier.redirectP95}`],
      'http_req_duration{kind:create}': [`p(95)<${tier.p95 * 2}`],
      'http_req_duration{kind:read}': [`p(95)<${tier.p95}`],
      'http_req_duration{kind:list}': [`p(95)<${tier.p95}`],
      'http_req_duration{kind:stats}': [`p(95)<${tier.p95}`],
    },
  };
}

function createUrl(tag) {
  const n = Math.floor(Math.random() * 1e9);
  return http.post(`${BASE}/urls`,
    JSON.stringify({ original_url: `https://example.com/load/${tag}/${n}`, title: `load ${tag}` }),
    Object.assign({ responseType: 'text', tags: { kind: 'create', name: 'POST /urls' } }, mgmt));
}

// Creates the links that the redirects will follow, through the same entry
// point, so every replica and the cache see them.
export function setup() {
  const health = http.get(`${BASE}/health`, { responseType: 'text' });
  if (health.status !== 200) fail(`${BASE}/health answered ${health.status}: is the stack up?`);
  const codes = [];
  const ids = [];
  for (let i = 0; i < CODES; i += 20) {
    const batch = [];
    for (let j = i; j < Math.min(CODES, i + 20); j++) {
      batch.push(['POST', `${BASE}/urls`,
        JSON.stringify({ original_url: `https://example.com/setup/${j}`, title: `setup ${j}` }),
        Object.assign({ responseType: 'text', tags: { kind: 'setup' } }, mgmt)]);
    }
    for (const res of http.batch(batch)) {
      if (res.status === 401 || res.status === 403) fail('setup: the admin key was refused (set ADMIN_API_KEY)');
      if (res.status !== 201) fail(`setup: POST /urls answered ${res.status}: ${res.body}`);
      const url = res.json();
      codes.push(url.short_code);
      ids.push(url.id);
    }
  }
  return { codes, ids };
}

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

export function mix(data) {
  const r = Math.random() * 100;
  if (r < 80) {
    const code = pick(data.codes);
    const res = http.get(`${BASE}/${code}`, { tags: { kind: 'redirect', name: 'GET /{short_code}' } });
    check(res, {
      'redirect is 302 with a Location': (x) => x.status === 302 && !!x.headers.Location,
    });
  } else if (r < 88) {
    const res = createUrl(`vu${exec.vu.idInTest}`);
    check(res, { 'create is 201': (x) => x.status === 201 });
  } else if (r < 93) {
    const res = http.get(`${BASE}/urls/${pick(data.ids)}`,
      Object.assign({ tags: { kind: 'read', name: 'GET /urls/{id}' } }, mgmt));
    check(res, { 'read is 200': (x) => x.status === 200 });
  } else if (r < 97) {
    const page = 1 + Math.floor(Math.random() * 20);
    const res = http.get(`${BASE}/urls?page=${page}&per_page=25`,
      Object.assign({ tags: { kind: 'list', name: 'GET /urls?page' } }, mgmt));
    check(res, { 'list is 200': (x) => x.status === 200 });
  } else {
    const res = http.get(`${BASE}/urls/${pick(data.ids)}/stats`,
      Object.assign({ tags: { kind: 'stats', name: 'GET /urls/{id}/stats' } }, mgmt));
    check(res, { 'stats is 200': (x) => x.status === 200 });
  }
  if (THINK_MS > 0) sleep((THINK_MS * (0.5 + Math.random())) / 1000);
}
