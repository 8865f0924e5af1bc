"""A confluent-kafka group consumer as its own process, so a test can SIGKILL it.

Usage: group_consumer.py BOOTSTRAP GROUP TOPIC [KEY=VALUE ...] (KEY= removes a
default setting, e.g. the classic session settings under group.protocol=consumer)
Prints one JSON object per line: {"assigned": [...]} after every assignment
change and {"msg": [partition, offset, value]} per message; commits after each
message it printed.
"""
import json
import sys

from confluent_kafka import Consumer


def main():
    bootstrap, group, topic = sys.argv[1:4]
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100}
    for kv in sys.argv[4:]:
        k, v = kv.split("=", 1)
        if v:
            conf[k] = v
        else:
            conf.pop(k, None)
    c = Consumer(conf)
    owned = set()

    def report():
        print(json.dumps({"assigned": sorted(owned)}), flush=True)

    def on_assign(consumer, parts):
        owned.update(p.partition for p in parts)
        report()

    def on_revoke(consumer, parts):
        owned.difference_update(p.partition for p in parts)
        report()

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while True:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        print(json.dumps({"msg": [m.partition(), m.offset(), m.value().decode()]}), flush=True)
        c.commit(message=m, asynchronous=False)


if __name__ == "__main__":
    main()
