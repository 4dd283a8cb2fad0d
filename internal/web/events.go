package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Hub fans server-sent events out to the dashboards connected to /api/events. Publishing never
// blocks: a subscriber that does not keep up loses events (the next status event carries the
// whole state again). A new subscriber first receives the latest event of each name.
type Hub struct {
	mu     sync.Mutex
	subs   map[chan []byte]struct{}
	latest map[string][]byte
	order  []string // names in first-published order, for replay
	closed bool
	// KeepAlive is the interval of comment lines that keep idle connections open (default 15 s).
	KeepAlive time.Duration
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: map[chan []byte]struct{}{}, latest: map[string][]byte{}, KeepAlive: 15 * time.Second}
}

// Publish sends v, as JSON, as event name to every subscriber.
func (h *Hub) Publish(name string, v any) error {
	if h == nil {
		return nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("event %s: %w", name, err)
	}
	msg := []byte("event: " + name + "\ndata: " + string(data) + "\n\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	if _, ok := h.latest[name]; !ok {
		h.order = append(h.order, name)
	}
	h.latest[name] = msg
	for c := range h.subs {
		select {
		case c <- msg:
		default: // slow subscriber: drop
		}
	}
	return nil
}

// Close ends every stream; later subscribers are refused.
func (h *Hub) Close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for c := range h.subs {
		close(c)
		delete(h.subs, c)
	}
}

func (h *Hub) subscribe() (chan []byte, [][]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, false
	}
	c := make(chan []byte, 32)
	h.subs[c] = struct{}{}
	var replay [][]byte
	for _, n := range h.order {
		replay = append(replay, h.latest[n])
	}
	return c, replay, true
}

func (h *Hub) unsubscribe(c chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[c]; ok {
		delete(h.subs, c)
		close(c)
	}
}

// ServeHTTP streams events until the client goes or the hub closes.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("streaming unsupported"))
		return
	}
	c, replay, ok := h.subscribe()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("the agent is stopping"))
		return
	}
	defer h.unsubscribe(c)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("retry: 2000\n\n"))
	for _, m := range replay {
		_, _ = w.Write(m)
	}
	fl.Flush()
	keep := time.NewTicker(h.KeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case m, ok := <-c:
			if !ok {
				return
			}
			if _, err := w.Write(m); err != nil {
				return
			}
			fl.Flush()
		case <-keep.C:
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
