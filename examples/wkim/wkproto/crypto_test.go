package wkproto_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

// Vectors computed with the SDK's own libraries (curve25519-js, crypto-js,
// md5-typescript, as bundled by wukongimjssdk 1.0.4), seeds being the
// ASCII bytes below, salt "Salt0123456789ab".
const (
	seedA     = "0123456789abcdef0123456789abcdef"
	seedB     = "fedcba9876543210fedcba9876543210"
	pubA      = "hlF7wMOf6Ha3ZGy1407gPa9xzLrWdFDBapcK2MvAPn4="
	pubB      = "2/ygd0TRqiC1sebr6VaMzxUwnqJ9Zmo98HwJpoCThRI="
	secretAB  = "39OqijFkvP4v3jvEXXksRCvZXAgLKJdPxZ+NcKZ2wQc="
	salt      = "Salt0123456789ab"
	plainJSON = `{"content":"hello 世界","type":1}`
	cipherB64 = "AvZb7qD8F4Z/hquJOEdrXk/8TS/zqG79I6egRlqAC9wq5HQyhezvEsTLpxsJnkiE"
	emptyB64  = "uPKxgC2tdDl49hjHkfSIvA=="
	sendKey   = "d10241eec9fc21aab156ee9c788cece9" // clientSeq 7, "cmn0001", "bob", type 1
	recvKey   = "fd0d3b6c60799aeb48c9e824592732a2" // id 1234567890123456789, seq 42, "cmn0001", ts 1700000000, alice, alice, 1
)

func sdkCipher(t *testing.T) *wkproto.Cipher {
	t.Helper()
	a, err := wkproto.NewKeyPair([]byte(seedA))
	if err != nil {
		t.Fatal(err)
	}
	if got := a.PublicBase64(); got != pubA {
		t.Fatalf("public key of seed A = %s, want %s", got, pubA)
	}
	b, err := wkproto.NewKeyPair([]byte(seedB))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := a.Shared(pubB)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Shared(a.PublicBase64())
	if err != nil {
		t.Fatal(err)
	}
	if base64.StdEncoding.EncodeToString(sa) != secretAB || !bytes.Equal(sa, sb) {
		t.Fatalf("shared secrets %x / %x, want %s from both sides", sa, sb, secretAB)
	}
	c, err := wkproto.NewCipher(sa, salt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCipherMatchesSDK(t *testing.T) {
	c := sdkCipher(t)
	if got := string(c.Encrypt([]byte(plainJSON))); got != cipherB64 {
		t.Fatalf("Encrypt = %s\nwant      %s", got, cipherB64)
	}
	if got := string(c.Encrypt(nil)); got != emptyB64 {
		t.Fatalf("Encrypt(empty) = %s, want %s", got, emptyB64)
	}
	plain, err := c.Decrypt([]byte(cipherB64))
	if err != nil || string(plain) != plainJSON {
		t.Fatalf("Decrypt = %q, %v", plain, err)
	}

	send := &wkproto.SendPacket{ClientSeq: 7, ClientMsgNo: "cmn0001", ChannelID: "bob", ChannelType: 1}
	c.SealSend(send, []byte(plainJSON))
	if string(send.Payload) != cipherB64 || send.MsgKey != sendKey {
		t.Fatalf("SealSend: payload %s key %s; want key %s", send.Payload, send.MsgKey, sendKey)
	}
	if got, err := c.OpenSend(send); err != nil || string(got) != plainJSON {
		t.Fatalf("OpenSend = %q, %v", got, err)
	}

	recv := &wkproto.RecvPacket{MessageID: 1234567890123456789, MessageSeq: 42, ClientMsgNo: "cmn0001",
		Timestamp: 1700000000, FromUID: "alice", ChannelID: "alice", ChannelType: 1}
	c.SealRecv(recv, []byte(plainJSON))
	if recv.MsgKey != recvKey {
		t.Fatalf("SealRecv key %s, want %s", recv.MsgKey, recvKey)
	}
	if got, err := c.OpenRecv(recv); err != nil || string(got) != plainJSON {
		t.Fatalf("OpenRecv = %q, %v", got, err)
	}
}

func TestCipherRejects(t *testing.T) {
	c := sdkCipher(t)
	send := &wkproto.SendPacket{ClientSeq: 7, ClientMsgNo: "cmn0001", ChannelID: "bob", ChannelType: 1}
	c.SealSend(send, []byte(plainJSON))

	tampered := *send
	tampered.ChannelID = "carol" // signed field changed
	if _, err := c.OpenSend(&tampered); !errors.Is(err, wkproto.ErrMsgKey) {
		t.Errorf("changed channel: %v, want ErrMsgKey", err)
	}
	other, _ := wkproto.NewCipher([]byte("another secret"), salt)
	if _, err := other.OpenSend(send); !errors.Is(err, wkproto.ErrMsgKey) {
		t.Errorf("other key: %v, want ErrMsgKey", err)
	}
	for _, bad := range []string{"", "not base64!", "AAAA", base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		if _, err := c.Decrypt([]byte(bad)); !errors.Is(err, wkproto.ErrPayload) {
			t.Errorf("Decrypt(%q): %v, want ErrPayload", bad, err)
		}
	}
	// A payload signed correctly but not ciphertext: the key matches, the
	// decryption fails.
	junk := &wkproto.SendPacket{ClientSeq: 1, ChannelID: "g", ChannelType: 2, Payload: []byte("plain text")}
	c.SignSend(junk)
	if _, err := c.OpenSend(junk); !errors.Is(err, wkproto.ErrPayload) {
		t.Errorf("OpenSend of a signed non-ciphertext payload: %v, want ErrPayload", err)
	}

	a, _ := wkproto.NewKeyPair([]byte(seedA))
	for _, bad := range []string{"", "%%%", base64.StdEncoding.EncodeToString(make([]byte, 31)), base64.StdEncoding.EncodeToString(make([]byte, 32))} {
		if _, err := a.Shared(bad); !errors.Is(err, wkproto.ErrBadKey) {
			t.Errorf("Shared(%q): %v, want ErrBadKey", bad, err)
		}
	}
	if _, err := wkproto.NewCipher([]byte("s"), "short"); !errors.Is(err, wkproto.ErrBadSalt) {
		t.Errorf("short salt: %v, want ErrBadSalt", err)
	}
	if _, err := wkproto.NewKeyPair([]byte("short seed")); err == nil {
		t.Errorf("NewKeyPair of 10 bytes succeeded")
	}
}

func TestGenerateKeyAndSalt(t *testing.T) {
	a, err := wkproto.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wkproto.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := a.Shared(b.PublicBase64())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Shared(a.PublicBase64())
	if err != nil || !bytes.Equal(sa, sb) {
		t.Fatalf("secrets differ: %x %x %v", sa, sb, err)
	}
	s1, s2 := wkproto.NewSalt(), wkproto.NewSalt()
	if len(s1) != 16 || s1 == s2 {
		t.Fatalf("salts %q %q: want 16 random characters", s1, s2)
	}
	if _, err := wkproto.GenerateKey(bytes.NewReader([]byte("too short"))); err == nil {
		t.Fatal("GenerateKey from 9 bytes succeeded")
	}
}
