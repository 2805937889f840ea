// node-redis (the Redis project's own Node.js client) speaking RESP3 to a
// server on 127.0.0.1:PORT: prints what it got as JSON for
// test_resp.py::test_node_redis_resp3 to check. node resp3.mjs PORT
import { createClient, RESP_TYPES } from 'redis';

const port = Number(process.argv[2]);
const client = createClient({ socket: { host: '127.0.0.1', port, connectTimeout: 10000 }, RESP: 3 });
client.on('error', (e) => { console.error(`node-redis: ${e}`); process.exit(2); });
await client.connect();
const bin = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });

const out = {};
out.ping = await client.ping();
// HELLO with no version: the connection's own state, a RESP3 map (an object here)
const hello = await client.hello();
out.helloProto = hello.proto;
out.helloServer = hello.server;
out.set = await client.set('n:a', 'alpha');
out.setNx = await client.set('n:a', 'other', { condition: 'NX' });
out.get = await client.get('n:a');
out.missing = await client.get('n:none');
out.setEx = await client.set('n:ttl', 'x', { expiration: { type: 'EX', value: 100 } });
out.ttl = await client.ttl('n:ttl');
out.mset = await client.mSet({ 'n:b': 'beta', 'n:c': 'gamma' });
out.mget = await client.mGet(['n:a', 'n:b', 'n:none', 'n:c']);
out.exists = await client.exists(['n:a', 'n:b', 'n:none']);
out.strlen = await client.strLen('n:c');
out.getrange = await client.getRange('n:c', 1, 3);
out.type = await client.type('n:a');
out.del = await client.del(['n:b', 'n:none']);
out.getdel = await client.getDel('n:c');
out.clientId = await client.clientId();
await client.clientSetName('resp3-test');
out.clientName = await client.clientGetName();
const keys = [];
for await (const batch of client.scanIterator({ MATCH: 'n:*', COUNT: 2 })) keys.push(...batch);
out.scan = keys.sort();
out.dbsize = await client.dbSize();
out.info = (await client.info('plenum')).includes('kv_hits_dram');
// a value of 12 MiB, bytes exact, through a Buffer
const big = Buffer.alloc(12 << 20);
for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
await client.set('n:big', big);
const back = await bin.get('n:big');
out.big = Buffer.isBuffer(back) && back.equals(big);
// pipelined (node-redis sends queued commands together)
const many = await Promise.all(Array.from({ length: 200 }, (_, i) => client.set(`p:${i}`, `v${i}`)));
out.pipelined = many.every((r) => r === 'OK');
const vals = await Promise.all(Array.from({ length: 200 }, (_, i) => client.get(`p:${i}`)));
out.pipelinedGet = vals.every((v, i) => v === `v${i}`);
try {
  await client.sendCommand(['NOSUCHCMD', 'x']);
  out.unknown = 'no error';
} catch (e) {
  out.unknown = String(e.message);
}
await client.quit();
console.log(JSON.stringify(out));
