package torture

import (
	"math/rand/v2"
)

// rng is the one source of randomness of a case or of one client. Everything drawn from it is
// reproduced by the same seed; nothing else (clock, map order, scheduling) may steer a draw.
type rng struct{ r *rand.Rand }

func newRNG(seed uint64, stream uint64) *rng {
	return &rng{r: rand.New(rand.NewPCG(seed, stream^0x9e3779b97f4a7c15))}
}

// fork derives an independent stream, e.g. one per workload client.
func (g *rng) fork(stream uint64) *rng { return newRNG(g.r.Uint64(), stream) }

func (g *rng) intn(n int) int {
	if n <= 0 {
		return 0
	}
	return g.r.IntN(n)
}

// between returns a number in [lo, hi].
func (g *rng) between(lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + g.r.IntN(hi-lo+1)
}

func (g *rng) chance(p float64) bool { return g.r.Float64() < p }

func (g *rng) float() float64 { return g.r.Float64() }

func (g *rng) int64() int64 { return int64(g.r.Uint64()) }

func (g *rng) uint64() uint64 { return g.r.Uint64() }

func pick[T any](g *rng, xs []T) T { return xs[g.intn(len(xs))] }

// weighted picks an index with the given weights (zero weights are never picked).
func (g *rng) weighted(weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	if total == 0 {
		return -1
	}
	x := g.intn(total)
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return len(weights) - 1
}

// shuffle permutes xs in place.
func shuffle[T any](g *rng, xs []T) {
	g.r.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
}
