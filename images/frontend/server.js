// The shop's front-end (Socks-Shop shape): HTML for people, JSON for clients.
//
// Twelve-factor: configured only from its environment, one log line per request on stdout,
// no state of its own (carts live in the carts service, orders in the orders service),
// disposable: SIGTERM stops accepting and lets requests in flight finish.
//
// Where the other services are: FRONTEND_UPSTREAMS names a JSON file that autopilot renders
// from the catalog ({"catalogue": [{"Address": ..., "Port": ...}], "carts": [...],
// "orders": [...]}) and replaces atomically when an instance comes or goes; it is re-read when
// it changes. Without it, CATALOGUE_URL, CARTS_URL and ORDERS_URL (one base URL each).
//
//   GET  /                         the shop page (JSON with Accept: application/json)
//   GET  /health                   {"status":"ok"}
//   GET  /api/catalogue            the products
//   GET  /api/cart/:customer       the cart
//   POST /api/cart/:customer/items/:item?qty=N    add to the cart
//   POST /api/orders/:customer?id=ID              order the cart; ID makes a retry safe
//   GET  /api/orders/:id           an order
'use strict';

const fs = require('fs');
const http = require('http');
const crypto = require('crypto');

const env = (name, def) => process.env[name] || def;
const PORT = parseInt(env('PORT', '8080'), 10);
const UPSTREAMS = env('FRONTEND_UPSTREAMS', '');
const TIMEOUT_MS = parseInt(env('FRONTEND_TIMEOUT_MS', '3000'), 10);
const ATTEMPTS = parseInt(env('FRONTEND_ATTEMPTS', '6'), 10);
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

let stamp = '';
let rendered = {};
const turn = {};

function fromEnv(service) {
  const url = process.env[`${service.toUpperCase()}_URL`];
  if (!url) return [];
  const u = new URL(url);
  return [{ Address: u.hostname, Port: parseInt(u.port || '80', 10) }];
}

// the instances of a service: the rendered file (re-read when it changed), else the env
function instances(service) {
  if (UPSTREAMS) {
    try {
      const st = fs.statSync(UPSTREAMS);
      const now = `${st.ino}/${st.mtimeMs}/${st.size}`;
      if (now !== stamp) {
        rendered = JSON.parse(fs.readFileSync(UPSTREAMS, 'utf8'));
        stamp = now;
        const counts = Object.entries(rendered).map(([k, v]) => `${k}=${v.length}`).join(' ');
        console.log(`frontend: upstreams from ${UPSTREAMS}: ${counts}`);
      }
    } catch (err) {
      if (err.code !== 'ENOENT') console.log(`frontend: cannot read ${UPSTREAMS}: ${err.message}`);
    }
    if (rendered[service] && rendered[service].length) return rendered[service];
  }
  return fromEnv(service);
}

function once(target, method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const req = http.request({
      host: target.Address, port: target.Port, method, path, timeout: TIMEOUT_MS,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length }
        : {},
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch (e) { json = { error: text.trim() }; }
        resolve({ status: res.statusCode, body: json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

// call a service: round-robin over its instances; a refused connection or a 503 (e.g. no
// primary during a failover) is retried on the next instance after a short pause. Only
// idempotent calls come here (orders carry their id), so a retry never doubles anything.
async function call(service, method, path, body, attempts = ATTEMPTS) {
  let last = `no ${service} instance known`;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const list = instances(service);
    if (list.length) {
      turn[service] = ((turn[service] || 0) + 1) % list.length;
      const target = list[turn[service]];
      try {
        const res = await once(target, method, path, body);
        if (res.status !== 503) return res;
        last = `${service} ${target.Address}:${target.Port}: ${res.body.error || 503}`;
      } catch (err) {
        last = `${service} ${target.Address}:${target.Port}: ${err.message}`;
      }
    }
    if (attempt + 1 < attempts) await pause(Math.min(2000, 100 * 2 ** attempt));
  }
  return { status: 503, body: { error: last } };
}

function wantsJson(req) {
  const accept = req.headers.accept || '';
  return accept.includes('application/json') && !accept.includes('text/html');
}

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(products, cart, customer) {
  const rows = products.map((p) => `<tr><td>${escape(p.name)}</td><td>${p.price.toFixed(2)}</td>
    <td><form method="post" action="/api/cart/${escape(customer)}/items/${escape(p.id)}?qty=1">
    <button>add to cart</button></form></td></tr>`).join('\n');
  const items = Object.entries(cart).map(([k, v]) => `<li>${escape(k)} &times; ${v}</li>`).join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>Socks</title></head><body>
<h1>Socks</h1><table>${rows}</table>
<h2>Cart of ${escape(customer)}</h2><ul>${items || '<li>empty</li>'}</ul>
<form method="post" action="/api/orders/${escape(customer)}"><button>place order</button></form>
</body></html>\n`;
}

async function order(customer, id) {
  const cart = await call('carts', 'GET', `/cart/${customer}`);
  if (cart.status !== 200) return cart;
  const entries = Object.entries(cart.body.cart || {}).filter(([, q]) => q > 0);
  if (!entries.length) {
    // an empty cart after a successful order: a retry of that order gets the order back
    const known = await call('orders', 'GET', `/orders/${id}`);
    if (known.status === 200) return known;
    return { status: 409, body: { error: `the cart of ${customer} is empty` } };
  }
  const catalogue = await call('catalogue', 'GET', '/catalogue');
  if (catalogue.status !== 200) return catalogue;
  const prices = new Map(catalogue.body.products.map((p) => [p.id, p]));
  const items = entries.map(([item, qty]) => ({
    id: item, qty, price: prices.has(item) ? prices.get(item).price : null,
  }));
  const total = items.reduce((sum, i) => sum + (i.price || 0) * i.qty, 0);
  const placed = await call('orders', 'POST', '/orders',
    { id, customer, items, total: Math.round(total * 100) / 100 });
  if (placed.status === 200 || placed.status === 201) {
    await call('carts', 'DELETE', `/cart/${customer}`); // the order is safe: empty the cart
  }
  return placed;
}

async function route(req, url) {
  const parts = url.pathname.split('/').filter(Boolean);
  const m = req.method;
  if (url.pathname === '/health') return { status: 200, body: { status: 'ok', service: 'frontend' } };
  if (parts.some((p) => !NAME.test(p))) return { status: 400, body: { error: 'bad path' } };
  if (url.pathname === '/' && m === 'GET') {
    const customer = url.searchParams.get('customer') || 'guest';
    // the page must not wait out a carts failover: one try, and an unknown cart shows empty
    const [catalogue, cart] = await Promise.all([
      call('catalogue', 'GET', '/catalogue'), call('carts', 'GET', `/cart/${customer}`, undefined, 1)]);
    const body = { products: catalogue.body.products || [], cart: (cart.body || {}).cart || {},
      customer };
    if (catalogue.status !== 200) return { status: 503, body: { error: catalogue.body.error } };
    return { status: 200, body, html: () => page(body.products, body.cart, customer) };
  }
  if (parts[0] !== 'api') return { status: 404, body: { error: `no route ${url.pathname}` } };
  if (parts[1] === 'catalogue' && m === 'GET') {
    return call('catalogue', 'GET', parts[2] ? `/catalogue/${parts[2]}` : '/catalogue');
  }
  if (parts[1] === 'cart' && parts[2]) {
    if (parts[3] === 'items' && parts[4] && m === 'POST') {
      const qty = url.searchParams.get('qty') || '1';
      if (!/^-?\d{1,6}$/.test(qty)) return { status: 400, body: { error: 'qty must be an integer' } };
      return call('carts', 'POST', `/cart/${parts[2]}/items/${parts[4]}?qty=${qty}`);
    }
    if (!parts[3] && m === 'GET') return call('carts', 'GET', `/cart/${parts[2]}`);
  }
  if (parts[1] === 'orders' && parts[2]) {
    if (m === 'POST') return order(parts[2], url.searchParams.get('id') || crypto.randomUUID());
    if (m === 'GET') return call('orders', 'GET', `/orders/${parts[2]}`);
  }
  return { status: 404, body: { error: `no route ${m} ${url.pathname}` } };
}

const server = http.createServer(async (req, res) => {
  const started = process.hrtime.bigint();
  req.resume();
  let out;
  try {
    out = await route(req, new URL(req.url, 'http://frontend'));
  } catch (err) {
    out = { status: 500, body: { error: err.message } };
  }
  let status = out.status;
  if (!wantsJson(req) && req.method === 'POST' && status < 300) {
    res.writeHead(303, { Location: '/' }); // a browser's form: back to the shop page
    status = 303;
    res.end();
  } else if (!wantsJson(req) && out.html) {
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(out.html());
  } else {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(`${JSON.stringify(out.body)}\n`);
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`${req.method} ${req.url} ${status} ${ms.toFixed(1)}ms`);
});

server.keepAliveTimeout = 5000;
server.listen(PORT, env('BIND', '0.0.0.0'), () => console.log(`frontend: listening on ${PORT}`));
process.on('SIGTERM', () => {
  console.log('frontend: SIGTERM, finishing requests in flight');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), parseInt(env('FRONTEND_DRAIN_MS', '5000'), 10)).unref();
});
