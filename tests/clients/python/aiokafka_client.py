"""aiokafka driver for tests/test_client_matrix.py: one JSON request on stdin, one
JSON answer on stdout (the protocol is described in tests/clients/README.md)."""
import asyncio
import json
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


def enc(s):
    return None if s is None else s.encode()


def dec(b):
    return None if b is None else b.decode()


def consumer(req, group, **kw):
    return AIOKafkaConsumer(req["topic"], bootstrap_servers=req["bootstrap"], group_id=group,
                            client_id="aiokafka-matrix", auto_offset_reset="earliest", enable_auto_commit=False,
                            fetch_max_wait_ms=100, session_timeout_ms=6000, heartbeat_interval_ms=500, **kw)


def row(m):
    return [m.partition, m.offset, dec(m.key), dec(m.value), [[k, dec(v)] for k, v in m.headers]]


async def produce(req):
    p = AIOKafkaProducer(bootstrap_servers=req["bootstrap"], client_id="aiokafka-matrix", acks="all",
                         enable_idempotence=req.get("idempotent", False),
                         compression_type=None if req.get("compression", "none") == "none" else req["compression"],
                         linger_ms=5)
    await p.start()
    try:
        futs = [await p.send(req["topic"], value=enc(m["value"]), key=enc(m.get("key")), partition=m["partition"],
                             headers=[(k, enc(v)) for k, v in m.get("headers", [])])
                for m in req["messages"]]
        metas = await asyncio.gather(*futs)
    finally:
        await p.stop()
    return {"delivered": [[m.partition, m.offset] for m in metas]}


async def read(c, count):
    out = []
    while len(out) < count:
        batch = await c.getmany(timeout_ms=500)
        for msgs in batch.values():
            out.extend(msgs)
    return out


async def consume(req):
    c = consumer(req, req["group"])
    await c.start()
    try:
        msgs = await asyncio.wait_for(read(c, req["count"]), req["wait_s"])
    finally:
        await c.stop()
    return {"messages": [row(m) for m in msgs]}


async def group(req):
    members = [consumer(req, req["group"]) for _ in range(2)]
    for c in members:
        await c.start()
    try:
        async def split():
            # Poll both (heartbeats and rebalances run in the background) until their
            # assignments are disjoint and cover every partition.
            while True:
                for c in members:
                    await c.getmany(timeout_ms=100)
                parts = [sorted(tp.partition for tp in c.assignment()) for c in members]
                if all(parts) and sorted(sum(parts, [])) == list(range(req["partitions"])):
                    return parts
        parts = await asyncio.wait_for(split(), req["wait_s"])
        p = AIOKafkaProducer(bootstrap_servers=req["bootstrap"], client_id="aiokafka-matrix", acks="all")
        await p.start()
        try:
            for i in range(req["count"]):
                await p.send_and_wait(req["topic"], key=f"k-{i}".encode(), value=f"g-{i}".encode(),
                                      partition=i % req["partitions"])
        finally:
            await p.stop()
        got = [[] for _ in members]

        async def drain():
            while sum(map(len, got)) < req["count"]:
                for i, c in enumerate(members):
                    for msgs in (await c.getmany(timeout_ms=100)).values():
                        got[i].extend(msgs)
        await asyncio.wait_for(drain(), req["wait_s"])
        for c in members:
            await c.commit()
    finally:
        for c in members:
            await c.stop()
    return {"members": [{"assignment": parts[i], "messages": [row(m)[:4] for m in got[i]]} for i in range(2)]}


async def resume(req):
    c = consumer(req, req["group"])
    await c.start()
    try:
        msgs = await asyncio.wait_for(read(c, req["count"]), req["wait_s"])
        await c.commit()
    finally:
        await c.stop()
    return {"messages": [row(m)[:4] for m in msgs]}


async def admin(req, fn):
    a = AIOKafkaAdminClient(bootstrap_servers=req["bootstrap"], client_id="aiokafka-matrix")
    await a.start()
    try:
        return await fn(a)
    finally:
        await a.close()


async def create_topic(req):
    async def go(a):
        await a.create_topics([NewTopic(req["topic"], req["partitions"], 1, topic_configs=req.get("config", {}))])
        return {}
    return await admin(req, go)


async def describe_topic(req):
    async def go(a):
        topics = await a.list_topics()
        (desc,) = await a.describe_topics([req["topic"]])
        (res,) = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, req["topic"],
                                                          configs={n: None for n in req["config_names"]})])
        # DescribeConfigs v0/v1 resources: (error, message, type, name, [(name, value, ...), ...]).
        entries = res.resources[0][4]
        return {"topics": sorted(topics), "partitions": sorted(p["partition"] for p in desc["partitions"]),
                "configs": {e[0]: e[1] for e in entries if e[0] in req["config_names"]}}
    return await admin(req, go)


async def list_topics(req):
    async def go(a):
        return {"topics": sorted(await a.list_topics())}
    return await admin(req, go)


async def delete_topic(req):
    async def go(a):
        await a.delete_topics([req["topic"]])
        return {}
    return await admin(req, go)


OPS = {f.__name__: f for f in (produce, consume, group, resume, create_topic, describe_topic, list_topics,
                                      delete_topic)}

if __name__ == "__main__":
    req = json.load(sys.stdin)
    print(json.dumps(asyncio.run(OPS[req["op"]](req))))
