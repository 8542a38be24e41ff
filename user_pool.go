package eventbus

import (
	"fmt"
)

// newUserPool builds the user pool: connection and protocol events, keyed
// by the user's UID so that one user's events run in order, or by the
// connection id before login.
func newUserPool(b *Bus, cfg PoolConfig) *pool {
	seed := b.seed
	return newPool(b, PoolUser, cfg, func(ev Event) (uint64, error) {
		return connKey(seed, ev.(*UserContext).Conn)
	}, false)
}

// connKey is the ordering key of a connection. A Conn whose methods panic
// (a typed nil pointer, say) is bad input: it gets an error, not a panic.
func connKey(seed uint64, conn Conn) (key uint64, err error) {
	if conn == nil {
		return 0, fmt.Errorf("%w: UserContext.Conn is nil", ErrNilEvent)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: UserContext.Conn panicked: %v", ErrNilEvent, r)
		}
	}()
	if uid := conn.UID(); uid != "" {
		return keyHash(seed, uid), nil
	}
	return uint64(conn.ID()) ^ connIDSalt, nil
}

// connIDSalt keeps connection-id keys apart from small UID hashes.
const connIDSalt = 0x9e3779b97f4a7c15
