// kafkajs driver for tests/test_client_matrix.py: one JSON request on stdin, one JSON
// answer on stdout (the protocol is in tests/clients/README.md). Logs go to stderr.
'use strict';
// Partitions are always chosen here; kafkajs's note about its default partitioner is noise.
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const { Kafka, logLevel, CompressionTypes, CompressionCodecs, ConfigResourceTypes } = require('kafkajs');
CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');

const CODECS = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy };

function client(req) {
  return new Kafka({
    clientId: 'kafkajs-matrix',
    brokers: [req.bootstrap],
    logLevel: logLevel.WARN,
    logCreator: () => ({ label, log }) => process.stderr.write(`${label} ${JSON.stringify(log)}\n`),
  });
}

const str = (b) => (b === null || b === undefined ? null : b.toString());
const row = (partition, m) => [partition, Number(m.offset), str(m.key), str(m.value),
  Object.entries(m.headers || {}).map(([k, v]) => [k, str(v)])];

function until(what, cond, ms) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - start > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

async function produce(req) {
  const idempotent = !!req.idempotent;
  const p = client(req).producer({ idempotent, maxInFlightRequests: idempotent ? 1 : undefined,
    allowAutoTopicCreation: false });
  await p.connect();
  try {
    const messages = req.messages.map((m) => ({ key: m.key, value: m.value, partition: m.partition,
      headers: Object.fromEntries(m.headers || []) }));
    const res = await p.send({ topic: req.topic, acks: -1, messages,
      compression: CODECS[req.compression || 'none'] });
    // One batch per partition, in the order given: message k of partition p is at base + k.
    const base = Object.fromEntries(res.map((r) => [r.partition, Number(r.baseOffset)]));
    const seen = {};
    const delivered = req.messages.map((m) => {
      const k = seen[m.partition] || 0;
      seen[m.partition] = k + 1;
      return [m.partition, base[m.partition] + k];
    });
    return { delivered };
  } finally {
    await p.disconnect();
  }
}

function consumer(req) {
  return client(req).consumer({ groupId: req.group, maxWaitTimeInMs: 100, sessionTimeout: 6000,
    heartbeatInterval: 500, allowAutoTopicCreation: false });
}

// Runs a member; returns its state. Its commits are explicit (autoCommit off).
async function member(req) {
  const c = consumer(req);
  const st = { c, assignment: null, messages: [] };
  c.on(c.events.GROUP_JOIN, (e) => { st.assignment = (e.payload.memberAssignment[req.topic] || []).slice().sort((x, y) => x - y); });
  await c.connect();
  await c.subscribe({ topic: req.topic, fromBeginning: true });
  await c.run({ autoCommit: false, eachMessage: async ({ partition, message }) => { st.messages.push(row(partition, message)); } });
  return st;
}

async function commit(req, st) {
  const last = {};
  for (const [p, o] of st.messages) last[p] = Math.max(last[p] ?? -1, o);
  const offsets = Object.entries(last).map(([p, o]) => ({ topic: req.topic, partition: Number(p), offset: String(o + 1) }));
  if (offsets.length) await st.c.commitOffsets(offsets);
}

async function consume(req) {
  const st = await member(req);
  try {
    await until(`${req.count} messages`, () => st.messages.length >= req.count, req.wait_s * 1000);
  } finally {
    await st.c.disconnect();
  }
  return { messages: st.messages };
}

async function group(req) {
  const members = [await member(req), await member(req)];
  try {
    await until('two members splitting the partitions', () => {
      const [a, b] = members.map((m) => m.assignment);
      if (!a || !b || !a.length || !b.length) return false;
      const all = [...a, ...b].sort((x, y) => x - y);
      return all.length === req.partitions && all.every((p, i) => p === i);
    }, req.wait_s * 1000);
    const p = client(req).producer({ allowAutoTopicCreation: false });
    await p.connect();
    const messages = [];
    for (let i = 0; i < req.count; i++) messages.push({ key: `k-${i}`, value: `g-${i}`, partition: i % req.partitions });
    await p.send({ topic: req.topic, acks: -1, messages });
    await p.disconnect();
    await until(`${req.count} messages`, () => members[0].messages.length + members[1].messages.length >= req.count,
      req.wait_s * 1000);
    for (const m of members) await commit(req, m);
  } finally {
    for (const m of members) await m.c.disconnect();
  }
  return { members: members.map((m) => ({ assignment: m.assignment, messages: m.messages.map((r) => r.slice(0, 4)) })) };
}

async function resume(req) {
  const st = await member(req);
  try {
    await until(`${req.count} messages`, () => st.messages.length >= req.count, req.wait_s * 1000);
    await commit(req, st);
  } finally {
    await st.c.disconnect();
  }
  return { messages: st.messages.map((r) => r.slice(0, 4)) };
}

async function withAdmin(req, fn) {
  const a = client(req).admin();
  await a.connect();
  try {
    return await fn(a);
  } finally {
    await a.disconnect();
  }
}

const create_topic = (req) => withAdmin(req, async (a) => {
  const created = await a.createTopics({ waitForLeaders: true, topics: [{ topic: req.topic, numPartitions: req.partitions,
    replicationFactor: 1, configEntries: Object.entries(req.config || {}).map(([name, value]) => ({ name, value })) }] });
  if (!created) throw new Error('createTopics answered false (the topic existed)');
  return {};
});

const describe_topic = (req) => withAdmin(req, async (a) => {
  const topics = (await a.listTopics()).sort();
  const md = await a.fetchTopicMetadata({ topics: [req.topic] });
  const cfg = await a.describeConfigs({ includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: req.topic, configNames: req.config_names }] });
  const configs = {};
  for (const e of cfg.resources[0].configEntries) if (req.config_names.includes(e.configName)) configs[e.configName] = e.configValue;
  return { topics, partitions: md.topics[0].partitions.map((p) => p.partitionId).sort((x, y) => x - y), configs };
});

const list_topics = (req) => withAdmin(req, async (a) => ({ topics: (await a.listTopics()).sort() }));

const delete_topic = (req) => withAdmin(req, async (a) => { await a.deleteTopics({ topics: [req.topic] }); return {}; });

const OPS = { produce, consume, group, resume, create_topic, describe_topic, list_topics, delete_topic };

let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', async () => {
  try {
    const req = JSON.parse(input);
    const out = await OPS[req.op](req);
    process.stdout.write(`${JSON.stringify(out)}\n`);
    process.exit(0);
  } catch (e) {
    process.stderr.write(`error: ${e.stack || e}\n`);
    process.exit(1);
  }
});
