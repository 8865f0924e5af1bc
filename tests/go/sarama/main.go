// A Sarama (Debian's 1.22, protocol 2.2) client for tests/test_old_clients.py:
//
//	sarama produce BOOTSTRAP TOPIC N      sync producer, N messages "m-0".."m-N-1"; prints "partition offset" per message
//	sarama consume BOOTSTRAP TOPIC GROUP N consumer group; reads N messages, marks them, closes (commits)
//	                                       and prints "value" per message
//
// SARAMA_VERSION (a Kafka version such as 0.10.2.0, default 2.2.0) sets the protocol
// Sarama speaks: below 0.11 it produces and fetches message sets of magic 0/1.
// SARAMA_CODEC (gzip, snappy, lz4) compresses what it produces.
//
// Built with Debian's packages: GO111MODULE=off GOPATH=/usr/share/gocode go build.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/Shopify/sarama"
)

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_2_0_0
	if v := os.Getenv("SARAMA_VERSION"); v != "" {
		parsed, err := sarama.ParseKafkaVersion(v)
		if err != nil {
			die(err)
		}
		c.Version = parsed
	}
	switch os.Getenv("SARAMA_CODEC") {
	case "gzip":
		c.Producer.Compression = sarama.CompressionGZIP
	case "snappy":
		c.Producer.Compression = sarama.CompressionSnappy
	case "lz4":
		c.Producer.Compression = sarama.CompressionLZ4
	}
	c.ClientID = "sarama-old"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Commits go out on Close; no periodic commits in between.
	c.Consumer.Offsets.CommitInterval = time.Hour
	return c
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

type handler struct {
	want int
	got  int
	done chan struct{}
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		fmt.Println(string(m.Value))
		s.MarkMessage(m, "")
		h.got++
		if h.got == h.want {
			close(h.done)
			return nil
		}
	}
	return nil
}

func main() {
	if len(os.Args) < 5 {
		die(fmt.Errorf("usage: sarama produce|consume BOOTSTRAP TOPIC [GROUP] N"))
	}
	brokers := []string{os.Args[2]}
	topic := os.Args[3]
	switch os.Args[1] {
	case "produce":
		n, err := strconv.Atoi(os.Args[4])
		if err != nil {
			die(err)
		}
		p, err := sarama.NewSyncProducer(brokers, config())
		if err != nil {
			die(err)
		}
		for i := 0; i < n; i++ {
			part, off, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprintf("m-%d", i))})
			if err != nil {
				die(err)
			}
			fmt.Println(part, off)
		}
		if err := p.Close(); err != nil {
			die(err)
		}
	case "consume":
		if len(os.Args) < 6 {
			die(fmt.Errorf("consume needs GROUP and N"))
		}
		n, err := strconv.Atoi(os.Args[5])
		if err != nil {
			die(err)
		}
		g, err := sarama.NewConsumerGroup(brokers, os.Args[4], config())
		if err != nil {
			die(err)
		}
		go func() {
			for err := range g.Errors() {
				fmt.Fprintln(os.Stderr, "group error:", err)
			}
		}()
		h := &handler{want: n, done: make(chan struct{})}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				if err := g.Consume(ctx, []string{topic}, h); err != nil {
					fmt.Fprintln(os.Stderr, "consume:", err)
					return
				}
			}
		}()
		select {
		case <-h.done:
		case <-ctx.Done():
			die(fmt.Errorf("got %d of %d messages", h.got, n))
		}
		cancel()
		// Close commits the marked offsets (OffsetCommit v1 at protocol 2.2).
		if err := g.Close(); err != nil {
			die(err)
		}
	default:
		die(fmt.Errorf("unknown mode %s", os.Args[1]))
	}
}
