// The reference peer for `bench/compare.sh`: the plain Node `ws` pattern, deliberately
// unoptimized. One http server shares its port with the WebSocket server; channels are a
// Map of channel -> Set<socket>; every publish is JSON.stringify'd once and sent to each
// subscriber; the usual isAlive heartbeat terminates peers that miss a ping.
//
// It speaks the subset of wirehub's protocol v1 that the benchmark scenarios use: welcome,
// subscribe/subscribed, unsubscribe/unsubscribed, publish/ack with offsets per channel,
// message with offset, ping/pong, error; plus GET /healthz and POST /api/publish.
//
// Usage: node server.js [PORT] [HOST]   (defaults 8090 and 127.0.0.1)
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8090);
const host = process.argv[3] || process.env.HOST || '127.0.0.1';
const HEARTBEAT_MS = 30000;
const epoch = Math.random().toString(16).slice(2, 18).padEnd(16, '0');

const channels = new Map(); // channel -> Set<WebSocket>
const offsets = new Map(); // channel -> offset of its last message
let sessions = 0;

function publish(channel, data) {
  const offset = (offsets.get(channel) || 0) + 1;
  offsets.set(channel, offset);
  const subscribers = channels.get(channel);
  if (subscribers) {
    const text = JSON.stringify({ type: 'message', channel, data, offset });
    for (const ws of subscribers) ws.send(text);
  }
  return offset;
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    res.end('ok\n');
  } else if (req.method === 'POST' && req.url === '/api/publish') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      let request;
      try { request = JSON.parse(body); } catch (err) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'invalid_json', message: String(err) } }));
        return;
      }
      const offset = publish(String(request.channel), request.data);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ offset }));
    });
  } else {
    res.writeHead(404);
    res.end();
  }
});

const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.channels = new Set();
  ws.on('pong', () => { ws.isAlive = true; });
  const reply = (message) => ws.send(JSON.stringify(message));
  const error = (id, code, message) => reply({ type: 'error', id, code, message });
  reply({ type: 'welcome', version: 1, session: String(++sessions), heartbeat: HEARTBEAT_MS / 1000 });

  ws.on('message', (raw, isBinary) => {
    if (isBinary) return error(undefined, 'binary_not_supported', 'send JSON text frames');
    let msg;
    try { msg = JSON.parse(raw); } catch (err) { return error(undefined, 'invalid_json', String(err)); }
    const { id, channel } = msg;
    switch (msg.type) {
      case 'subscribe': {
        if (ws.channels.has(channel)) return error(id, 'already_subscribed', 'already subscribed');
        let set = channels.get(channel);
        if (!set) channels.set(channel, (set = new Set()));
        set.add(ws);
        ws.channels.add(channel);
        return reply({ type: 'subscribed', id, channel, epoch, offset: offsets.get(channel) || 0 });
      }
      case 'unsubscribe': {
        if (!ws.channels.delete(channel)) return error(id, 'not_subscribed', 'not subscribed');
        leave(ws, channel);
        return reply({ type: 'unsubscribed', id, channel });
      }
      case 'publish':
        return reply({ type: 'ack', id, offset: publish(channel, msg.data) });
      case 'ping':
        return reply({ type: 'pong', id });
      default:
        return error(id, 'unknown_type', `unknown message type ${msg.type}`);
    }
  });

  ws.on('close', () => {
    for (const channel of ws.channels) leave(ws, channel);
    ws.channels.clear();
  });
});

function leave(ws, channel) {
  const set = channels.get(channel);
  if (!set) return;
  set.delete(ws);
  if (set.size === 0) channels.delete(channel);
}

const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) { ws.terminate(); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, HEARTBEAT_MS);
wss.on('close', () => clearInterval(heartbeat));

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => { wss.close(); server.close(); process.exit(0); });
}

server.listen(port, host, () => {
  console.error(`reference server listening addr=${host}:${server.address().port}`);
});
