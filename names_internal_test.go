package eventbus

import "testing"

// TestShortFuncName pins HandlerName's rule on the names the runtime
// gives functions of every shape.
func TestShortFuncName(t *testing.T) {
	tests := []struct{ full, want string }{
		{"github.com/acme/imapp.permission", "permission"},
		{"github.com/acme/imapp.(*Server).permission-fm", "permission"},
		{"github.com/acme/imapp.(*Server).permission", "permission"},
		{"github.com/acme/imapp.Server.permission-fm", "permission"},
		{"github.com/acme/imapp.(*Server).register.func1", "register"},
		{"github.com/acme/imapp.(*Server).register.func1.2", "register"},
		{"github.com/acme/imapp.(*Server).register.func3.gowrap1", "register"},
		{"github.com/acme/imapp.(*Server).register-range1.func2", "register"},
		{"github.com/acme/imapp.handle[...]", "handle"},
		{"github.com/acme/imapp.handle[go.shape.struct { github.com/x/y.T }]", "handle"},
		{"github.com/acme/imapp.(*Server[...]).permission-fm", "permission"},
		{"github.com/acme/imapp.glob..func1", "imapp"},
		{"github.com/acme/imapp.init.func1", "imapp"},
		{"github.com/acme/imapp.init", "init"},
		{"gopkg.in/yaml%2ev3.decode", "decode"},
		{"main.main.func1", "main"},
		{"main.onSend", "onSend"},
		{"imapp.func12x", "func12x"},
		{"", "handler"},
	}
	for _, tt := range tests {
		if got := shortFuncName(tt.full); got != tt.want {
			t.Errorf("shortFuncName(%q) = %q, want %q", tt.full, got, tt.want)
		}
	}
}
