package wkproto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Key exchange, as the SDK does it: each side has an X25519 key pair and
// sends its public key in base64 (CONNECT's ClientKey, CONNACK's
// ServerKey); both compute the same secret. The AES-128 key is the first
// 16 characters of the lowercase hex MD5 of the secret's base64; the IV is
// the first 16 characters of CONNACK's salt. One key and IV serve both
// directions for the whole connection.

// Errors of the key exchange and of payload checks.
var (
	// ErrBadKey says a peer's public key is not base64 of 32 bytes, or
	// gives a degenerate shared secret.
	ErrBadKey = errors.New("wkproto: bad public key")
	// ErrBadSalt says a salt is shorter than the 16 characters of the IV.
	ErrBadSalt = errors.New("wkproto: salt shorter than 16 bytes")
	// ErrMsgKey says a packet's MsgKey does not sign its fields.
	ErrMsgKey = errors.New("wkproto: message key mismatch")
	// ErrPayload says a payload is not base64 of AES-CBC ciphertext with
	// valid PKCS#7 padding under the connection's key.
	ErrPayload = errors.New("wkproto: payload does not decrypt")
)

// KeyPair is one side's X25519 key pair.
type KeyPair struct {
	priv *ecdh.PrivateKey
}

// GenerateKey makes a key pair from 32 bytes of rand (crypto/rand's
// Reader when rand is nil).
func GenerateKey(r io.Reader) (*KeyPair, error) {
	if r == nil {
		r = rand.Reader
	}
	seed := make([]byte, 32)
	if _, err := io.ReadFull(r, seed); err != nil {
		return nil, fmt.Errorf("wkproto: key pair: %w", err)
	}
	return NewKeyPair(seed)
}

// NewKeyPair makes the key pair whose private key is seed (32 bytes,
// clamped as X25519 does), as curve25519-js generateKeyPair(seed) does.
func NewKeyPair(seed []byte) (*KeyPair, error) {
	priv, err := ecdh.X25519().NewPrivateKey(seed)
	if err != nil {
		return nil, fmt.Errorf("wkproto: key pair: %w", err)
	}
	return &KeyPair{priv: priv}, nil
}

// PublicBase64 returns the public key in standard base64, as CONNECT and
// CONNACK carry it.
func (k *KeyPair) PublicBase64() string {
	return base64.StdEncoding.EncodeToString(k.priv.PublicKey().Bytes())
}

// Shared returns the X25519 secret shared with the peer whose public key
// is peerBase64.
func (k *KeyPair) Shared(peerBase64 string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(peerBase64)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("%w: want base64 of 32 bytes", ErrBadKey)
	}
	pub, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	secret, err := k.priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return secret, nil
}

const saltAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// NewSalt returns 16 random letters and digits: a salt for CONNACK.
func NewSalt() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	for i := range b {
		b[i] = saltAlphabet[int(b[i])%len(saltAlphabet)]
	}
	return string(b[:])
}

// Cipher encrypts and signs the payloads of one connection. It is safe for
// concurrent use.
type Cipher struct {
	block cipher.Block
	iv    [aes.BlockSize]byte
}

// NewCipher derives a connection's cipher from the shared secret and the
// salt of CONNACK.
func NewCipher(secret []byte, salt string) (*Cipher, error) {
	if len(salt) < aes.BlockSize {
		return nil, ErrBadSalt
	}
	sum := md5.Sum([]byte(base64.StdEncoding.EncodeToString(secret)))
	key := hex.EncodeToString(sum[:])[:16]
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("wkproto: cipher: %w", err)
	}
	c := &Cipher{block: block}
	copy(c.iv[:], salt)
	return c, nil
}

// Encrypt returns base64(AES-128-CBC(PKCS#7(plain))) with the connection's
// key and fixed IV, as CryptoJS AES.encrypt(...).toString() gives it.
func (c *Cipher) Encrypt(plain []byte) []byte {
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := make([]byte, len(plain)+pad)
	copy(buf, plain)
	for i := len(plain); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(c.block, c.iv[:]).CryptBlocks(buf, buf)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(buf)))
	base64.StdEncoding.Encode(out, buf)
	return out
}

// Decrypt reverses Encrypt. It returns ErrPayload when text is not base64
// of whole AES blocks or its padding is wrong.
func (c *Cipher) Decrypt(text []byte) ([]byte, error) {
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(buf, text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	buf = buf[:n]
	if n == 0 || n%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of blocks", ErrPayload, n)
	}
	cipher.NewCBCDecrypter(c.block, c.iv[:]).CryptBlocks(buf, buf)
	pad := int(buf[n-1])
	if pad == 0 || pad > aes.BlockSize || !bytes.Equal(buf[n-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, fmt.Errorf("%w: bad padding", ErrPayload)
	}
	return buf[:n-pad], nil
}

// msgKey is md5hex(E(s)): the signature both directions use.
func (c *Cipher) msgKey(s []byte) string {
	sum := md5.Sum(c.Encrypt(s))
	return hex.EncodeToString(sum[:])
}

// sendSigned is what a SEND's MsgKey signs: clientSeq, clientMsgNo,
// channelID, channelType and the payload text, numbers in decimal, nothing
// between them.
func sendSigned(p *SendPacket) []byte {
	b := strconv.AppendUint(nil, uint64(p.ClientSeq), 10)
	b = append(b, p.ClientMsgNo...)
	b = append(b, p.ChannelID...)
	b = strconv.AppendUint(b, uint64(p.ChannelType), 10)
	return append(b, p.Payload...)
}

// recvSigned is what a RECV's MsgKey signs: messageID, messageSeq,
// clientMsgNo, timestamp, fromUID, channelID, channelType and the payload
// text.
func recvSigned(p *RecvPacket) []byte {
	b := strconv.AppendInt(nil, p.MessageID, 10)
	b = strconv.AppendUint(b, uint64(p.MessageSeq), 10)
	b = append(b, p.ClientMsgNo...)
	b = strconv.AppendUint(b, uint64(p.Timestamp), 10)
	b = append(b, p.FromUID...)
	b = append(b, p.ChannelID...)
	b = strconv.AppendUint(b, uint64(p.ChannelType), 10)
	return append(b, p.Payload...)
}

// SealSend encrypts plain into p.Payload and signs p with p.MsgKey, as
// the SDK does before it sends. The other fields must be set first.
func (c *Cipher) SealSend(p *SendPacket, plain []byte) {
	p.Payload = c.Encrypt(plain)
	c.SignSend(p)
}

// SignSend sets p.MsgKey to the signature of p's fields and payload as
// they are.
func (c *Cipher) SignSend(p *SendPacket) {
	p.MsgKey = c.msgKey(sendSigned(p))
}

// OpenSend checks p's MsgKey (ErrMsgKey) and returns its decrypted
// payload (ErrPayload).
func (c *Cipher) OpenSend(p *SendPacket) ([]byte, error) {
	if c.msgKey(sendSigned(p)) != p.MsgKey {
		return nil, ErrMsgKey
	}
	return c.Decrypt(p.Payload)
}

// SealRecv encrypts plain into p.Payload and signs p with p.MsgKey, with
// the receiver's cipher. The other fields must be set first.
func (c *Cipher) SealRecv(p *RecvPacket, plain []byte) {
	p.Payload = c.Encrypt(plain)
	c.SignRecv(p)
}

// SignRecv sets p.MsgKey to the signature of p's fields and payload as
// they are.
func (c *Cipher) SignRecv(p *RecvPacket) {
	p.MsgKey = c.msgKey(recvSigned(p))
}

// OpenRecv checks p's MsgKey (ErrMsgKey) and returns its decrypted
// payload (ErrPayload), as the SDK does when a RECV arrives.
func (c *Cipher) OpenRecv(p *RecvPacket) ([]byte, error) {
	if c.msgKey(recvSigned(p)) != p.MsgKey {
		return nil, ErrMsgKey
	}
	return c.Decrypt(p.Payload)
}
