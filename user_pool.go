package eventbus

import (
	"fmt"
	"hash/maphash"
)

// newUserPool builds the user pool: connection and protocol events, keyed
// by the user's UID so that one user's events run in order, or by the
// connection id before login.
func newUserPool(b *Bus, cfg PoolConfig) *pool {
	seed := b.seed
	return newPool(b, PoolUser, cfg, func(ev Event) (uint64, error) {
		conn := ev.(*UserContext).Conn
		if conn == nil {
			return 0, fmt.Errorf("%w: UserContext.Conn is nil", ErrNilEvent)
		}
		if uid := conn.UID(); uid != "" {
			return maphash.String(seed, uid), nil
		}
		return uint64(conn.ID()) ^ connIDSalt, nil
	})
}

// connIDSalt keeps connection-id keys apart from small UID hashes.
const connIDSalt = 0x9e3779b97f4a7c15
