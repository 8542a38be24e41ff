package eventbus

import (
	"context"
	"testing"
)

type otherKey struct{}

// TestIsBackgroundKnowsOnlyBackground: the add path's cheap test for
// context.Background() (one type-word compare) must say no to every other
// context, those built on Background included, or their values and
// cancellation would be dropped.
func TestIsBackgroundKnowsOnlyBackground(t *testing.T) {
	if !isBackground(context.Background()) {
		t.Fatal("context.Background() not recognised")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	defer cancel()
	for name, ctx := range map[string]context.Context{
		"TODO":          context.TODO(),
		"WithValue":     context.WithValue(context.Background(), otherKey{}, 1),
		"WithCancel":    cancelled,
		"WithoutCancel": context.WithoutCancel(context.Background()),
		"handler's ctx": &callCtx{},
	} {
		if isBackground(ctx) {
			t.Errorf("%s taken for context.Background()", name)
		}
	}
}
