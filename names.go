package eventbus

import (
	"reflect"
	"runtime"
	"strconv"
	"strings"
)

// HandlerName returns the name a bus gives a handler fn registered without
// WithName, before any "#n" that makes it unique: the short name of the
// function, readable as a log field and a metric label.
//
// The rule, applied to the name the runtime knows the function by:
//
//   - the package path and the package name go:
//     "github.com/acme/imapp.permission" is "permission";
//   - so does a method's receiver, and the "-fm" of a method value:
//     "imapp.(*Server).permission-fm" is "permission";
//   - type arguments go: "imapp.handle[...]" is "handle";
//   - a function literal is named after the function it is written in:
//     "imapp.(*Server).register.func1" (and nested literals such as
//     ".func1.2", range-over-func bodies "-range1", go/defer wrappers) is
//     "register";
//   - a function literal outside any function (a package-level var) or
//     in init is named after its package: "imapp.init.func1" is "imapp";
//   - a value that is not a function, or one the runtime cannot name,
//     gives "handler".
//
// Register adds "#2", "#3"… only when the name is already taken by
// another handler of the same event type, so the first handler keeps the
// plain name. eventbustest.Run names handlers the same way.
//
// HandlerName uses reflection; it is meant for registration time, not for
// a hot path. It is safe for concurrent use.
func HandlerName(fn any) string {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return defaultHandlerName
	}
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return defaultHandlerName
	}
	return shortFuncName(f.Name())
}

const defaultHandlerName = "handler"

// shortFuncName applies HandlerName's rule to a runtime function name.
func shortFuncName(full string) string {
	name := full
	// Type arguments may hold slashes and dots of their own: drop them
	// before splitting ("pkg.F[...]", "pkg.(*T[...]).M").
	name = stripBrackets(name)
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	// The linker escapes dots in the last path element (yaml%2ev3), so the
	// first dot ends the package name.
	pkg, name, _ := strings.Cut(name, ".")
	parts := strings.Split(name, ".")
	if len(parts) > 1 && parts[0] == "glob" && parts[1] == "" {
		return pkg // a function literal at package level: "imapp.glob..func1"
	}
	for i := len(parts) - 1; i >= 0; i-- {
		p := strings.TrimSuffix(parts[i], "-fm")
		if j := strings.Index(p, "-range"); j >= 0 {
			p = p[:j]
		}
		if p == "" || isClosureMark(p) || strings.HasPrefix(p, "(") {
			continue
		}
		if p == "init" && i < len(parts)-1 {
			return pkg // a literal in a package-level var or in init: "imapp.init.func1"
		}
		return p
	}
	return defaultHandlerName
}

// isClosureMark reports whether a part of a function name is one the
// compiler makes up for a function literal or a wrapper: "func1", "2",
// "gowrap1", "deferwrap1".
func isClosureMark(p string) bool {
	for _, prefix := range []string{"func", "gowrap", "deferwrap", ""} {
		if rest, ok := strings.CutPrefix(p, prefix); ok && rest != "" {
			if _, err := strconv.Atoi(rest); err == nil {
				return true
			}
		}
	}
	return false
}

// stripBrackets removes every [...] group, nested ones included.
func stripBrackets(s string) string {
	if !strings.Contains(s, "[") {
		return s
	}
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '[':
			depth++
		case r == ']' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// uniqueName returns base if no handler in hs but the one at skip has it,
// else base#2, base#3…, the first one free.
func uniqueName(base string, hs []handlerEntry, skip int) string {
	taken := func(name string) bool {
		for i := range hs {
			if i != skip && hs[i].name == name {
				return true
			}
		}
		return false
	}
	name := base
	for n := 2; taken(name); n++ {
		name = base + "#" + strconv.Itoa(n)
	}
	return name
}
