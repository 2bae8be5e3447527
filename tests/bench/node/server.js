// make bench's Node peer (tests/bench/run.sh): the ingest work ccsyncd does, done the
// usual Node way, to be measured with the very same signed requests. Fastify receives
// POST /v1/associations/:id/webhooks/novi, the standardwebhooks package verifies the
// signature (HMAC-SHA256 over id.timestamp.body, the 5-minute window), and ioredis runs
// one Lua script that sets the dedup key (NX, 7 days) and XADDs the event, as ccsyncd's
// enqueue does; 202 when queued or a duplicate, 401 on a bad signature.
// Usage: node server.js PORT REDIS_PORT SECRET
'use strict';
const Fastify = require('fastify');
const Redis = require('ioredis');
const { Webhook } = require('standardwebhooks');

const [port, redisPort, secret] = process.argv.slice(2);
const wh = new Webhook(secret.replace(/^whsec_/, ''));
const redis = new Redis({ host: '127.0.0.1', port: Number(redisPort), enableAutoPipelining: true });
redis.defineCommand('enqueue', {
  numberOfKeys: 2,
  lua:
    "if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then " +
    "return redis.call('XADD', KEYS[2], '*', 'assoc', ARGV[2], 'id', ARGV[3], 'type', ARGV[4], " +
    "'ts', ARGV[5], 'body', ARGV[6]) end return false",
});

const app = Fastify({ logger: false });
// The signature covers the exact bytes: keep the body as a string, parse it after.
app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => done(null, body));
app.post('/v1/associations/:id/webhooks/novi', async (req, reply) => {
  let event;
  try {
    event = wh.verify(req.body, req.headers);
  } catch (e) {
    return reply.code(401).send({ error: 'bad signature' });
  }
  const assoc = req.params.id;
  const id = req.headers['webhook-id'];
  await redis.enqueue(`ccsync:{${assoc}}:dedup:${id}`, 'ccsync:events', 604800, assoc, id,
    event.type || '', event.timestamp || '', req.body);
  return reply.code(202).send({ status: 'queued' });
});
app.listen({ port: Number(port), host: '127.0.0.1' }).catch((e) => {
  console.error(e);
  process.exit(1);
});
