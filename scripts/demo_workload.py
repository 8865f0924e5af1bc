"""A small, steady workload for `make demo`, with real Kafka clients (confluent-kafka):

- a producer writing JSON orders to TOPIC at about RATE messages per second;
- group `demo-readers`: two members that keep up and commit as they go;
- group `demo-audit`: one member that reads slowly, so its lag grows on the console.

Usage: demo_workload.py BOOTSTRAP TOPIC PARTITIONS RATE
Runs until interrupted (SIGINT or SIGTERM).
"""
import json
import random
import signal
import sys
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

stop = threading.Event()


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)
    try:
        fut[topic].result(timeout=15)
        print(f"created topic {topic} with {partitions} partitions", flush=True)
    except Exception as e:  # an existing topic is fine: the demo may be restarted on it
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise


def produce(bootstrap, topic, rate):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "client.id": "demo-producer"})
    customers = ["ada", "grace", "alan", "edsger", "barbara", "ken", "dennis", "margaret"]
    n = 0
    while not stop.is_set():
        order = {"order": n, "customer": random.choice(customers),
                 "amount": round(random.uniform(1, 500), 2), "ts": int(time.time() * 1000)}
        # Keyed by order, so the orders spread over every partition.
        p.produce(topic, key=f"order-{n}".encode(), value=json.dumps(order).encode())
        p.poll(0)
        n += 1
        stop.wait(1.0 / rate)
    p.flush(10)


def consume(bootstrap, topic, group, client_id, delay):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": client_id,
                  "auto.offset.reset": "earliest", "enable.auto.commit": True,
                  "auto.commit.interval.ms": 1000})
    c.subscribe([topic])
    try:
        while not stop.is_set():
            m = c.poll(0.5)
            if m is not None and not m.error() and delay:
                stop.wait(delay)
    finally:
        c.close()


def main():
    bootstrap, topic, partitions, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    create_topic(bootstrap, topic, partitions)
    threads = [threading.Thread(target=produce, args=(bootstrap, topic, rate))]
    for i in range(2):
        threads.append(threading.Thread(target=consume, args=(bootstrap, topic, "demo-readers", f"reader-{i}", 0)))
    # Reads at a fifth of the produce rate: its lag grows steadily.
    threads.append(threading.Thread(target=consume, args=(bootstrap, topic, "demo-audit", "auditor", 5.0 / rate)))
    for t in threads:
        t.start()
    print(f"producing about {rate:g} messages/s to {topic}; groups demo-readers (2 members) and demo-audit (slow)",
          flush=True)
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(timeout=15)


if __name__ == "__main__":
    main()
