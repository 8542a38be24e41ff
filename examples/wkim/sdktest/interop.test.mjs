// Interop test: the official WuKongIM JS SDK (npm wukongimjssdk 1.0.4)
// against the Go example server of examples/wkim. It builds the server,
// starts it with an admin token, sets each user's login token through the
// admin API, checks that one user's token does not log in as another,
// connects several SDK clients as different users, sends
// person-to-person and group messages, and checks that SENDACKs arrive,
// that every receiver's SDK delivers its messages in order, and that a
// user who was offline gets what it missed when it logs in.
//
// Run: npm ci && node --test   (or `make sdk-test` from the repository root)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { bundleSDK } from './build.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const WAIT_MS = 15000;

// The SDK expects a browser: a global WebSocket (Node 20 has none).
globalThis.WebSocket = WebSocket;

// The SDK console.logs constantly, in Chinese; keep it for failures.
const sdkLog = [];
const realLog = console.log;
if (!process.env.WKIM_SDK_LOG) {
  console.log = (...args) => { sdkLog.push(args.map(String).join(' ')); if (sdkLog.length > 2000) sdkLog.shift(); };
}
// An exception inside the SDK's async packet handler is an unhandled
// rejection, which would kill Node: record it and fail the test instead.
const asyncErrors = [];
process.on('unhandledRejection', (e) => asyncErrors.push(e));

let server; // { proc, url, stdout: string[], exited: Promise<number> }
let workDir;

before(async () => {
  await bundleSDK();
  workDir = mkdtempSync(path.join(tmpdir(), 'wkim-sdktest-'));
  const bin = path.join(workDir, 'wkim');
  execFileSync('go', ['build', '-o', bin, './examples/wkim'], { cwd: repoRoot, stdio: 'inherit' });
  server = await startServer(bin, ['-addr', '127.0.0.1:0', '-admin-token', ADMIN, '-group', 'g1=alice,bob,carol,dave']);
  // The application server gives each user a login token of its own.
  for (const uid of ['alice', 'bob', 'carol', 'dave']) await admin('PUT', `/users/${uid}/token`, { token: 'token-' + uid });
});

// The admin API's bearer token, random for this run.
const ADMIN = 'admin-' + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);

async function admin(method, path, body) {
  const res = await fetch(server.url.replace(/^ws/, 'http') + path, {
    method, headers: { Authorization: `Bearer ${ADMIN}` }, body: body && JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.text()}`);
}

after(async () => {
  if (server && server.proc.exitCode === null) server.proc.kill('SIGKILL');
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  console.log = realLog;
});

function startServer(bin, args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout = [];
    let stderr = '';
    let buf = '';
    const exited = new Promise((res) => proc.on('exit', (code, sig) => res(code ?? sig)));
    const timer = setTimeout(() => reject(new Error('server did not start:\n' + stderr)), WAIT_MS);
    proc.stderr.on('data', (d) => { stderr += d; });
    proc.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        stdout.push(line);
        const m = line.match(/listening on (ws:\/\/\S+)/);
        if (m) {
          clearTimeout(timer);
          resolve({ proc, url: m[1], stdout, exited, stderr: () => stderr });
        }
      }
    });
    proc.on('error', reject);
  });
}

// A user: one independent copy of the SDK (the SDK is all singletons, and
// a different query string gives a new module instance), what its message
// listener delivered and the SENDACKs its status listener saw.
async function connectUser(uid, token = 'token-' + uid, instance = uid) {
  const { default: WKSDK } = await import(`./sdk.bundle.mjs?user=${instance}`);
  const sdk = WKSDK.shared();
  sdk.config.addr = server.url;
  sdk.config.uid = uid;
  sdk.config.token = token;
  const u = { uid, sdk, received: [], acks: [], waiters: new Set() };
  const changed = () => { for (const w of [...u.waiters]) w(); };
  sdk.chatManager.addMessageListener((m) => {
    if (!m.messageID) return; // the SDK's local echo of what this user sends
    u.received.push({
      from: m.fromUID, channelID: m.channel.channelID, channelType: m.channel.channelType,
      seq: m.messageSeq, id: m.messageID, text: m.content.text,
    });
    changed();
  });
  sdk.chatManager.addMessageStatusListener((ack) => {
    u.acks.push({ clientSeq: ack.clientSeq, reasonCode: ack.reasonCode, seq: ack.messageSeq, id: ack.messageID.toString() });
    changed();
  });
  u.until = (what, cond) => new Promise((resolve, reject) => {
    if (cond()) return resolve();
    const timer = setTimeout(() => { u.waiters.delete(check); reject(new Error(`${uid}: timed out waiting for ${what}`)); }, WAIT_MS);
    const check = () => { if (cond()) { clearTimeout(timer); u.waiters.delete(check); resolve(); } };
    u.waiters.add(check);
  });
  u.send = (channelID, channelType, text) => sdk.chatManager.send(sdk.newMessageText(text), sdk.newChannel(channelID, channelType));
  u.texts = (filter) => u.received.filter(filter).map((m) => m.text);

  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${uid}: no CONNACK`)), WAIT_MS);
    sdk.connectManager.addConnectStatusListener((status, reasonCode) => {
      if (status === 1) { clearTimeout(timer); resolve(); } // ConnectStatus.Connected
      else if (status === 3) { // ConnectFail: the SDK stops; so do its timers
        clearTimeout(timer);
        sdk.disconnect();
        clearInterval(sdk.receiptManager.timer);
        reject(new Error(`${uid}: login refused, reason ${reasonCode}`));
      }
    });
    sdk.connect();
  });
  return u;
}

const P2P = 1, GROUP = 2;
const range = (n, f) => Array.from({ length: n }, (_, i) => f(i + 1));

function assertOrdered(u, msgs, what) {
  for (let i = 1; i < msgs.length; i++) {
    assert.ok(msgs[i].seq > msgs[i - 1].seq, `${u.uid}: ${what}: seq ${msgs[i].seq} after ${msgs[i - 1].seq}`);
  }
}

test('the official JS SDK logs in, sends and receives through the Go server', async () => {
  // Someone with alice's token cannot log in as bob: the SDK's ConnectFail
  // with the auth-failure reason code (2).
  await assert.rejects(connectUser('bob', 'token-alice', 'mallory'), /bob: login refused, reason 2$/);

  const alice = await connectUser('alice');
  const bob = await connectUser('bob');
  const carol = await connectUser('carol');
  // dave, a member of g1, stays offline for now.

  const p2p = range(5, (i) => `alice to bob ${i}`);
  const p2pBack = range(2, (i) => `bob to alice ${i}`);
  const gAlice = range(5, (i) => `alice in g1 ${i}`);
  const gBob = range(3, (i) => `bob in g1 ${i}`);
  for (let i = 0; i < 5; i++) {
    await alice.send('bob', P2P, p2p[i]);
    await alice.send('g1', GROUP, gAlice[i]);
    if (i < 3) await bob.send('g1', GROUP, gBob[i]);
    if (i < 2) await bob.send('alice', P2P, p2pBack[i]);
  }

  // SENDACKs: one per message, success, with the client sequence the SDK
  // numbered them with.
  await alice.until('10 SENDACKs', () => alice.acks.length >= 10);
  await bob.until('5 SENDACKs', () => bob.acks.length >= 5);
  for (const u of [alice, bob]) {
    assert.deepEqual(u.acks.map((a) => a.reasonCode), u.acks.map(() => 1), `${u.uid}: SENDACK reasons`);
    assert.deepEqual(u.acks.map((a) => a.clientSeq).sort((a, b) => a - b), range(u.acks.length, (i) => i));
    assert.equal(u.sdk.chatManager.sendingQueues.size, 0, `${u.uid}: messages left in the SDK's sending queue`);
  }

  // Person to person: the receiver sees the channel named after the sender.
  const fromAlice = (m) => m.channelType === P2P && m.channelID === 'alice';
  await bob.until('5 p2p messages', () => bob.texts(fromAlice).length >= 5);
  assert.deepEqual(bob.texts(fromAlice), p2p);
  assertOrdered(bob, bob.received.filter(fromAlice), 'p2p');
  const fromBob = (m) => m.channelType === P2P && m.channelID === 'bob';
  await alice.until('2 p2p messages', () => alice.texts(fromBob).length >= 2);
  assert.deepEqual(alice.texts(fromBob), p2pBack);

  // Group: every member but the sender, each sender's messages in order,
  // the channel's sequence growing.
  const inG1 = (m) => m.channelType === GROUP && m.channelID === 'g1';
  await carol.until('8 group messages', () => carol.texts(inG1).length >= 8);
  await bob.until('5 group messages', () => bob.texts(inG1).length >= 5);
  await alice.until('3 group messages', () => alice.texts(inG1).length >= 3);
  assert.deepEqual(carol.texts((m) => inG1(m) && m.from === 'alice'), gAlice);
  assert.deepEqual(carol.texts((m) => inG1(m) && m.from === 'bob'), gBob);
  assert.deepEqual(bob.texts(inG1), gAlice);
  assert.deepEqual(alice.texts(inG1), gBob);
  for (const u of [alice, bob, carol]) assertOrdered(u, u.received.filter(inG1), 'g1');
  assert.deepEqual(carol.received.filter(inG1).map((m) => m.seq), range(8, (i) => i));

  // dave was offline: on login he gets all eight, in the channel's order.
  const dave = await connectUser('dave');
  await dave.until('8 missed messages', () => dave.texts(inG1).length >= 8);
  assert.deepEqual(dave.texts(inG1), carol.texts(inG1));
  assert.deepEqual(dave.received.map((m) => m.seq), range(8, (i) => i));

  // Now online, he takes part.
  await dave.send('g1', GROUP, 'dave is back');
  await dave.until('his SENDACK', () => dave.acks.length >= 1);
  assert.equal(dave.acks[0].reasonCode, 1);
  assert.equal(dave.acks[0].seq, 9);
  for (const u of [alice, bob, carol]) {
    await u.until("dave's message", () => u.texts(inG1).includes('dave is back'));
    assert.equal(u.received.at(-1).seq, 9);
  }

  // Disconnect, and wait for each close handshake: the server answers the
  // close frame only after reading everything before it, RECVACKs included.
  await Promise.all([alice, bob, carol, dave].map((u) => {
    const socket = u.sdk.connectManager.ws.ws; // the SDK's wrapper, then the ws WebSocket
    const closed = new Promise((resolve) => socket.addEventListener('close', resolve));
    u.sdk.disconnect();
    clearInterval(u.sdk.receiptManager.timer); // started by the SDK, never stopped
    return closed;
  }));

  // The server shuts down cleanly on SIGINT and its counters add up: every
  // RECV it wrote was acknowledged by an SDK.
  server.proc.kill('SIGINT');
  const code = await server.exited;
  const last = server.stdout.at(-1) ?? '';
  assert.equal(code, 0, `server exit ${code}; stderr:\n${server.stderr()}`);
  // sent: 5+5+3+2+1; delivered: p2p 7, g1 5×2 + 3×2 + 1×3, dave's replay 8.
  assert.match(last, /^wkim stopped: sent=16 delivered=34 offline=8 acked=34 badFrames=0$/);
  // The one warning: the refused login as bob with alice's token.
  const warnings = server.stderr().split('\n').filter((l) => l !== '');
  assert.equal(warnings.length, 1, `server logged warnings or errors:\n${server.stderr()}`);
  assert.match(warnings[0], /level=WARN msg="connection closed" .*reason="login refused for uid \\"bob\\""/);
  assert.deepEqual(asyncErrors, [], 'the SDK threw inside its packet handler');
});

process.on('exit', (code) => {
  if (code !== 0 && sdkLog.length) realLog('--- SDK console (last lines) ---\n' + sdkLog.slice(-50).join('\n'));
});
