package lora

import (
	"fmt"
	"math"
)

// Schedule names a learning-rate schedule.
type Schedule string

// Learning-rate schedules. All warm up linearly over the warmup steps.
const (
	Cosine   Schedule = "cosine"   // half cosine from lr to lr/10
	Linear   Schedule = "linear"   // straight line from lr to 0
	Constant Schedule = "constant" // lr throughout
)

// ParseSchedule validates a --schedule value.
func ParseSchedule(s string) (Schedule, error) {
	switch sc := Schedule(s); sc {
	case Cosine, Linear, Constant:
		return sc, nil
	case "":
		return Cosine, nil
	}
	return "", fmt.Errorf("unknown schedule %q (cosine, linear, constant)", s)
}

// LR is the learning rate at step (0-based) of total steps.
func (s Schedule) LR(base float64, step, total, warmup int) float64 {
	if warmup > 0 && step < warmup {
		return base * float64(step+1) / float64(warmup)
	}
	span := total - warmup
	if span <= 1 {
		return base
	}
	frac := float64(step-warmup) / float64(span-1)
	frac = min(max(frac, 0), 1)
	switch s {
	case Linear:
		return base * (1 - frac)
	case Constant:
		return base
	default:
		lo := base / 10
		return lo + (base-lo)*0.5*(1+math.Cos(math.Pi*frac))
	}
}
