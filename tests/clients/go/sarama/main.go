// Sarama driver for tests/test_client_matrix.py (Debian's Sarama 1.22, protocol 2.2):
// one JSON request on stdin, one JSON answer on stdout (tests/clients/README.md).
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

	"github.com/Shopify/sarama"
)

type message struct {
	Key       *string     `json:"key"`
	Value     string      `json:"value"`
	Headers   [][2]string `json:"headers"`
	Partition int32       `json:"partition"`
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
	Idempotent  bool              `json:"idempotent"`
	Config      map[string]string `json:"config"`
	ConfigNames []string          `json:"config_names"`
	WaitS       int               `json:"wait_s"`
}

// row is [partition, offset, key, value, headers].
type row []interface{}

var codecs = map[string]sarama.CompressionCodec{
	"": sarama.CompressionNone, "none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy, "lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD,
}

func config(r *request) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_2_0_0
	c.ClientID = "sarama-matrix"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewManualPartitioner
	c.Producer.Compression = codecs[r.Compression]
	if r.Idempotent {
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
	}
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
	c.Consumer.Group.Session.Timeout = 6 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	return c
}

func str(b []byte) interface{} {
	if b == nil {
		return nil
	}
	return string(b)
}

func toRow(m *sarama.ConsumerMessage, headers bool) row {
	r := row{m.Partition, m.Offset, str(m.Key), string(m.Value)}
	if headers {
		hs := [][2]string{}
		for _, h := range m.Headers {
			hs = append(hs, [2]string{string(h.Key), string(h.Value)})
		}
		r = append(r, hs)
	}
	return r
}

func produce(r *request) (interface{}, error) {
	p, err := sarama.NewSyncProducer([]string{r.Bootstrap}, config(r))
	if err != nil {
		return nil, err
	}
	// Closed exactly once on every path: a second Close makes Sarama 1.22's
	// shutdown send on a closed channel and panic.
	msgs := make([]*sarama.ProducerMessage, len(r.Messages))
	for i, m := range r.Messages {
		pm := &sarama.ProducerMessage{Topic: r.Topic, Value: sarama.StringEncoder(m.Value), Partition: m.Partition}
		if m.Key != nil {
			pm.Key = sarama.StringEncoder(*m.Key)
		}
		for _, h := range m.Headers {
			pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
		}
		msgs[i] = pm
	}
	if err := p.SendMessages(msgs); err != nil {
		p.Close()
		return nil, err
	}
	delivered := [][2]int64{}
	for _, m := range msgs {
		delivered = append(delivered, [2]int64{int64(m.Partition), m.Offset})
	}
	return map[string]interface{}{"delivered": delivered}, p.Close()
}

// member is one consumer-group member: its latest assignment and what it read.
type member struct {
	mu         sync.Mutex
	topic      string
	headers    bool
	assignment []int32
	messages   []row
}

func (h *member) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.assignment = append([]int32{}, s.Claims()[h.topic]...)
	sort.Slice(h.assignment, func(i, j int) bool { return h.assignment[i] < h.assignment[j] })
	return nil
}
func (h *member) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *member) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.messages = append(h.messages, toRow(m, h.headers))
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

func (h *member) snapshot() ([]int32, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.assignment, len(h.messages)
}

// join starts a member that consumes until ctx ends; Close commits what it marked.
func join(ctx context.Context, r *request, headers bool) (sarama.ConsumerGroup, *member, error) {
	g, err := sarama.NewConsumerGroup([]string{r.Bootstrap}, r.Group, config(r))
	if err != nil {
		return nil, nil, err
	}
	h := &member{topic: r.Topic, headers: headers}
	go func() {
		for err := range g.Errors() {
			fmt.Fprintln(os.Stderr, "group error:", err)
		}
	}()
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{r.Topic}, h); err != nil {
				fmt.Fprintln(os.Stderr, "consume:", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return g, h, nil
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

func consumeN(r *request, headers bool) (interface{}, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, h, err := join(ctx, r, headers)
	if err != nil {
		return nil, err
	}
	err = until(fmt.Sprintf("%d messages", r.Count), r.WaitS, func() bool { _, n := h.snapshot(); return n >= r.Count })
	cancel()
	if cerr := g.Close(); err == nil {
		err = cerr
	}
	return map[string]interface{}{"messages": h.messages}, err
}

func group(r *request) (interface{}, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gs []sarama.ConsumerGroup
	var hs []*member
	for i := 0; i < 2; i++ {
		g, h, err := join(ctx, r, false)
		if err != nil {
			return nil, err
		}
		gs, hs = append(gs, g), append(hs, h)
	}
	err := until("two members splitting the partitions", r.WaitS, func() bool {
		a, _ := hs[0].snapshot()
		b, _ := hs[1].snapshot()
		all := append(append([]int32{}, a...), b...)
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		if len(a) == 0 || len(b) == 0 || len(all) != r.Partitions {
			return false
		}
		for i, p := range all {
			if int(p) != i {
				return false
			}
		}
		return true
	})
	if err == nil {
		var p sarama.SyncProducer
		if p, err = sarama.NewSyncProducer([]string{r.Bootstrap}, config(r)); err == nil {
			var msgs []*sarama.ProducerMessage
			for i := 0; i < r.Count; i++ {
				msgs = append(msgs, &sarama.ProducerMessage{Topic: r.Topic, Partition: int32(i % r.Partitions),
					Key: sarama.StringEncoder(fmt.Sprintf("k-%d", i)), Value: sarama.StringEncoder(fmt.Sprintf("g-%d", i))})
			}
			err = p.SendMessages(msgs)
			p.Close()
		}
	}
	if err == nil {
		err = until(fmt.Sprintf("%d messages", r.Count), r.WaitS, func() bool {
			_, a := hs[0].snapshot()
			_, b := hs[1].snapshot()
			return a+b >= r.Count
		})
	}
	cancel()
	for _, g := range gs {
		// Close commits the marked offsets.
		if cerr := g.Close(); err == nil {
			err = cerr
		}
	}
	members := []map[string]interface{}{}
	for _, h := range hs {
		members = append(members, map[string]interface{}{"assignment": h.assignment, "messages": h.messages})
	}
	return map[string]interface{}{"members": members}, err
}

func withAdmin(r *request, f func(sarama.ClusterAdmin) (interface{}, error)) (interface{}, error) {
	a, err := sarama.NewClusterAdmin([]string{r.Bootstrap}, config(r))
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return f(a)
}

func topicNames(a sarama.ClusterAdmin) ([]string, error) {
	ts, err := a.ListTopics()
	names := []string{}
	for t := range ts {
		names = append(names, t)
	}
	sort.Strings(names)
	return names, err
}

func run(r *request) (interface{}, error) {
	switch r.Op {
	case "produce":
		return produce(r)
	case "consume":
		return consumeN(r, true)
	case "group":
		return group(r)
	case "resume":
		return consumeN(r, false)
	case "create_topic":
		return withAdmin(r, func(a sarama.ClusterAdmin) (interface{}, error) {
			entries := map[string]*string{}
			for k, v := range r.Config {
				v := v
				entries[k] = &v
			}
			return map[string]interface{}{}, a.CreateTopic(r.Topic, &sarama.TopicDetail{NumPartitions: int32(r.Partitions),
				ReplicationFactor: 1, ConfigEntries: entries}, false)
		})
	case "describe_topic":
		return withAdmin(r, func(a sarama.ClusterAdmin) (interface{}, error) {
			names, err := topicNames(a)
			if err != nil {
				return nil, err
			}
			md, err := a.DescribeTopics([]string{r.Topic})
			if err != nil {
				return nil, err
			}
			if len(md) != 1 || md[0].Err != sarama.ErrNoError {
				return nil, fmt.Errorf("describe %s: %v", r.Topic, md)
			}
			parts := []int32{}
			for _, p := range md[0].Partitions {
				parts = append(parts, p.ID)
			}
			sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
			entries, err := a.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: r.Topic,
				ConfigNames: r.ConfigNames})
			configs := map[string]string{}
			for _, e := range entries {
				configs[e.Name] = e.Value
			}
			return map[string]interface{}{"topics": names, "partitions": parts, "configs": configs}, err
		})
	case "list_topics":
		return withAdmin(r, func(a sarama.ClusterAdmin) (interface{}, error) {
			names, err := topicNames(a)
			return map[string]interface{}{"topics": names}, err
		})
	case "delete_topic":
		return withAdmin(r, func(a sarama.ClusterAdmin) (interface{}, error) {
			return map[string]interface{}{}, a.DeleteTopic(r.Topic)
		})
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
