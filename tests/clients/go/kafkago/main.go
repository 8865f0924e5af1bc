// segmentio kafka-go driver for tests/test_client_matrix.py (Debian's kafka-go 0.2.1):
// one JSON request on stdin, one JSON answer on stdout (tests/clients/README.md).
// kafka-go 0.2.1 has no record headers, no idempotent producer and no DescribeConfigs.
//
// Built with Debian's packages: GO111MODULE=off GOPATH=/usr/share/gocode go build.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/gzip"
	"github.com/segmentio/kafka-go/lz4"
	"github.com/segmentio/kafka-go/snappy"
)

type message struct {
	Key       *string `json:"key"`
	Value     string  `json:"value"`
	Partition int     `json:"partition"`
}

type request struct {
	Op          string            `json:"op"`
	Bootstrap   string            `json:"bootstrap"`
	Topic       string            `json:"topic"`
	Group       string            `json:"group"`
	Partitions  int               `json:"partitions"`
	Count       int               `json:"count"`
	Messages    []message         `json:"messages"`
	Compression string            `json:"compression"`
	Config      map[string]string `json:"config"`
	WaitS       int               `json:"wait_s"`
}

// row is [partition, offset, key, value(, headers)].
type row []interface{}

func codec(name string) kafka.CompressionCodec {
	switch name {
	case "gzip":
		return gzip.NewCompressionCodec()
	case "snappy":
		return snappy.NewCompressionCodec()
	case "lz4":
		return lz4.NewCompressionCodec()
	}
	return nil
}

func bytesOf(s *string) []byte {
	if s == nil {
		return nil
	}
	return []byte(*s)
}

func str(b []byte) interface{} {
	if b == nil {
		return nil
	}
	return string(b)
}

// produce writes each partition's messages through a connection to its leader; the
// offsets are the partition's end before the write plus the message's place.
func produce(r *request) (interface{}, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.WaitS)*time.Second)
	defer cancel()
	byPart := map[int][]kafka.Message{}
	for _, m := range r.Messages {
		byPart[m.Partition] = append(byPart[m.Partition], kafka.Message{Key: bytesOf(m.Key), Value: []byte(m.Value)})
	}
	base := map[int]int64{}
	for p, msgs := range byPart {
		c, err := kafka.DialLeader(ctx, "tcp", r.Bootstrap, r.Topic, p)
		if err != nil {
			return nil, err
		}
		end, err := c.ReadLastOffset()
		if err == nil {
			base[p] = end
			if cc := codec(r.Compression); cc != nil {
				_, err = c.WriteCompressedMessages(cc, msgs...)
			} else {
				_, err = c.WriteMessages(msgs...)
			}
		}
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("partition %d: %v", p, err)
		}
	}
	delivered := [][2]int64{}
	seen := map[int]int64{}
	for _, m := range r.Messages {
		delivered = append(delivered, [2]int64{int64(m.Partition), base[m.Partition] + seen[m.Partition]})
		seen[m.Partition]++
	}
	return map[string]interface{}{"delivered": delivered}, nil
}

// member is a group reader and what it read; kafka-go 0.2.1 does not expose a
// member's assignment, so the partitions it read stand for it.
type member struct {
	mu       sync.Mutex
	reader   *kafka.Reader
	messages []row
}

func join(ctx context.Context, r *request, headers bool, wg *sync.WaitGroup) *member {
	m := &member{reader: kafka.NewReader(kafka.ReaderConfig{Brokers: []string{r.Bootstrap}, GroupID: r.Group,
		Topic: r.Topic, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 6 * time.Second})}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := m.reader.FetchMessage(ctx)
			if err != nil {
				return
			}
			rw := row{msg.Partition, msg.Offset, str(msg.Key), string(msg.Value)}
			if headers {
				rw = append(rw, [][2]string{})
			}
			m.mu.Lock()
			m.messages = append(m.messages, rw)
			m.mu.Unlock()
			if err := m.reader.CommitMessages(ctx, msg); err != nil {
				fmt.Fprintln(os.Stderr, "commit:", err)
			}
		}
	}()
	return m
}

func (m *member) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.messages)
}

func until(what string, wait int, cond func() bool) error {
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func read(r *request, members int, headers bool, before func() error) ([]*member, error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ms []*member
	for i := 0; i < members; i++ {
		ms = append(ms, join(ctx, r, headers, &wg))
	}
	var err error
	if before != nil {
		err = before()
	}
	if err == nil {
		err = until(fmt.Sprintf("%d messages", r.Count), r.WaitS, func() bool {
			n := 0
			for _, m := range ms {
				n += m.count()
			}
			return n >= r.Count
		})
	}
	cancel()
	wg.Wait()
	for _, m := range ms {
		if cerr := m.reader.Close(); err == nil {
			err = cerr
		}
	}
	return ms, err
}

func group(r *request) (interface{}, error) {
	ms, err := read(r, 2, false, func() error {
		msgs := []message{}
		for i := 0; i < r.Count; i++ {
			k := fmt.Sprintf("k-%d", i)
			msgs = append(msgs, message{Key: &k, Value: fmt.Sprintf("g-%d", i), Partition: i % r.Partitions})
		}
		_, err := produce(&request{Bootstrap: r.Bootstrap, Topic: r.Topic, Messages: msgs, WaitS: r.WaitS})
		return err
	})
	out := []map[string]interface{}{}
	for _, m := range ms {
		seen := map[int]bool{}
		parts := []int{}
		for _, rw := range m.messages {
			if p := rw[0].(int); !seen[p] {
				seen[p] = true
				parts = append(parts, p)
			}
		}
		sort.Ints(parts)
		out = append(out, map[string]interface{}{"assignment": parts, "messages": m.messages})
	}
	return map[string]interface{}{"members": out}, err
}

// topicNames lists the request's topic when it exists: kafka-go 0.2.1 cannot list every
// topic (ReadPartitions() sends Metadata v1 with an empty topic array, which asks for none).
func topicNames(c *kafka.Conn, topic string) ([]string, error) {
	ps, err := c.ReadPartitions(topic)
	if err == kafka.UnknownTopicOrPartition {
		return []string{}, nil
	}
	if err != nil || len(ps) == 0 {
		return []string{}, err
	}
	return []string{topic}, nil
}

func run(r *request) (interface{}, error) {
	switch r.Op {
	case "produce":
		return produce(r)
	case "consume", "resume":
		ms, err := read(r, 1, r.Op == "consume", nil)
		return map[string]interface{}{"messages": ms[0].messages}, err
	case "group":
		return group(r)
	}
	c, err := kafka.Dial("tcp", r.Bootstrap)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	switch r.Op {
	case "create_topic":
		entries := []kafka.ConfigEntry{}
		for k, v := range r.Config {
			entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		return map[string]interface{}{}, c.CreateTopics(kafka.TopicConfig{Topic: r.Topic, NumPartitions: r.Partitions,
			ReplicationFactor: 1, ConfigEntries: entries})
	case "describe_topic":
		names, err := topicNames(c, r.Topic)
		if err != nil {
			return nil, err
		}
		ps, err := c.ReadPartitions(r.Topic)
		parts := []int{}
		for _, p := range ps {
			parts = append(parts, p.ID)
		}
		sort.Ints(parts)
		return map[string]interface{}{"topics": names, "partitions": parts}, err
	case "list_topics":
		names, err := topicNames(c, r.Topic)
		return map[string]interface{}{"topics": names}, err
	case "delete_topic":
		return map[string]interface{}{}, c.DeleteTopics(r.Topic)
	}
	return nil, fmt.Errorf("unknown op %q", r.Op)
}

func main() {
	var r request
	if err := json.NewDecoder(os.Stdin).Decode(&r); err != nil {
		fmt.Fprintln(os.Stderr, "error: bad request:", err)
		os.Exit(1)
	}
	out, err := run(&r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
