package eventbus

import (
	"context"
	"reflect"
	"time"
	"unsafe"
)

// A follow-on event takes the values of the context it was added with. When
// that context derives from a handler's (a timeout around the call, values
// added by middleware), keeping it would keep the parent's call machinery
// alive — its timer, its context block and every producer context the block
// holds — for as long as the child, and a chain of follow-ons would keep
// every hop before it. detachValues copies what the derived contexts add
// (the values) onto the parent's own producer values instead, so a hop keeps
// values only, and values shadowed by a later hop are dropped.

// flatValues is a never-cancelled context holding copied values over a
// values-only parent.
type flatValues struct {
	parent context.Context // never cancelled, nil for none
	kvs    []keyValue      // newest first, keys distinct
}

type keyValue struct{ key, val any }

func (*flatValues) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*flatValues) Done() <-chan struct{}       { return nil }
func (*flatValues) Err() error                  { return nil }

func (v *flatValues) Value(key any) any {
	for i := range v.kvs {
		if v.kvs[i].key == key {
			return v.kvs[i].val
		}
	}
	if v.parent != nil {
		return v.parent.Value(key)
	}
	return nil
}

func (v *flatValues) String() string { return "eventbus.values" }

// stdCtx describes the context package's own derived contexts, found once
// with reflect: which type is which, and where each keeps its parent (and,
// for a value context, its key and value). ok is false if their layout is
// not the expected one, and detachValues then gives up.
var stdCtx = func() (s struct {
	ok                       bool
	value, cancel, timer, wo reflect.Type
	// stop is what a cancel context keeps over a parent with an AfterFunc
	// method, such as a handler's context.
	stop                                            reflect.Type
	valueParent, key, val                           uintptr
	cancelParent, timerParent, woParent, stopParent uintptr
}) {
	type k struct{}
	bg := context.Background()
	cc, cancel1 := context.WithCancel(bg)
	tc, cancel2 := context.WithDeadline(bg, time.Now().Add(time.Hour))
	cancel1()
	cancel2()
	s.value = reflect.TypeOf(context.WithValue(bg, k{}, 1))
	s.cancel, s.timer = reflect.TypeOf(cc), reflect.TypeOf(tc)
	s.wo = reflect.TypeOf(context.WithoutCancel(cc))
	sc, cancel3 := context.WithCancel(afterFuncer{bg, make(chan struct{})})
	cancel3()
	ctxType := reflect.TypeFor[context.Context]()
	anyType := reflect.TypeFor[any]()
	// field returns the offset of the field reached by names in the struct
	// (pointed to by) t, checking its type.
	ok := true
	field := func(t reflect.Type, want reflect.Type, names ...string) uintptr {
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		var off uintptr
		for i, n := range names {
			if t.Kind() != reflect.Struct {
				ok = false
				return 0
			}
			f, found := t.FieldByName(n)
			if !found || len(f.Index) != 1 {
				ok = false
				return 0
			}
			off += f.Offset
			t = f.Type
			if i == len(names)-1 && t != want {
				ok = false
			}
		}
		return off
	}
	for _, t := range []reflect.Type{s.value, s.cancel, s.timer} {
		ok = ok && t.Kind() == reflect.Pointer
	}
	s.valueParent = field(s.value, ctxType, "Context")
	s.key = field(s.value, anyType, "key")
	s.val = field(s.value, anyType, "val")
	s.cancelParent = field(s.cancel, ctxType, "Context")
	s.timerParent = field(s.timer, ctxType, "cancelCtx", "Context")
	s.woParent = field(s.wo, ctxType, "c")
	if sp := dataOf(sc); sc != nil && reflect.TypeOf(sc) == s.cancel {
		s.stop = reflect.TypeOf(*(*context.Context)(unsafe.Add(sp, s.cancelParent)))
		s.stopParent = field(s.stop, ctxType, "Context")
	}
	s.ok = ok && s.wo.Kind() == reflect.Struct && s.stop != nil && s.stop.Kind() == reflect.Struct
	return s
}()

// afterFuncer is a context with an AfterFunc method, like a handler's: a
// cancel context over it keeps it inside a context-package wrapper.
type afterFuncer struct {
	context.Context
	done chan struct{}
}

func (a afterFuncer) Done() <-chan struct{}        { return a.done }
func (a afterFuncer) AfterFunc(func()) func() bool { return func() bool { return true } }

// dataOf returns the data word of an interface holding a context: the
// pointer itself for a pointer type, the boxed value otherwise.
func dataOf(ctx context.Context) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&ctx))[1]
}

// detachValues returns the values a follow-on event added with ctx should
// keep, when ctx derives from the handler context c: the values ctx adds on
// top of c, copied, over c's own producer values. It reports false when ctx
// holds a context it cannot see through. It allocates only when ctx adds
// values.
func detachValues(ctx context.Context, c *callCtx) (context.Context, bool) {
	if !stdCtx.ok {
		return nil, false
	}
	var kvs []keyValue
	for cur := ctx; ; {
		t := reflect.TypeOf(cur)
		p := dataOf(cur)
		switch t {
		case stdCtx.value:
			key := *(*any)(unsafe.Add(p, stdCtx.key))
			if !hasKey(kvs, key) {
				kvs = append(kvs, keyValue{key, *(*any)(unsafe.Add(p, stdCtx.val))})
			}
			cur = *(*context.Context)(unsafe.Add(p, stdCtx.valueParent))
			continue
		case stdCtx.cancel:
			cur = *(*context.Context)(unsafe.Add(p, stdCtx.cancelParent))
			continue
		case stdCtx.timer:
			cur = *(*context.Context)(unsafe.Add(p, stdCtx.timerParent))
			continue
		case stdCtx.wo:
			cur = *(*context.Context)(unsafe.Add(p, stdCtx.woParent))
			continue
		case stdCtx.stop:
			cur = *(*context.Context)(unsafe.Add(p, stdCtx.stopParent))
			continue
		}
		if cur != context.Context(c) {
			return nil, false
		}
		break
	}
	base := c.values()
	if len(kvs) == 0 {
		return base, true
	}
	if f, ok := base.(*flatValues); ok {
		for _, kv := range f.kvs {
			if !hasKey(kvs, kv.key) {
				kvs = append(kvs, kv)
			}
		}
		base = f.parent
	}
	return &flatValues{parent: base, kvs: kvs}, true
}

func hasKey(kvs []keyValue, key any) bool {
	for i := range kvs {
		if kvs[i].key == key {
			return true
		}
	}
	return false
}
