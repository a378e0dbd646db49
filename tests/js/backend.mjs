// A Node.js backend of a tracker-zmq node, written from docs/reference/protocol.md
// ("The client protocol") alone, with the `zeromq` npm package (v6): a DEALER socket,
// one JSON object per frame, requests matched to replies by id (pipelined: several may
// be in flight), a session opened by hello and kept by heartbeats, diffs pushed after
// subscribe. Driven by tests/test_backend_js.py.
//
// Usage: node backend.mjs ENDPOINT CLIENT_ID
// Reads JSON command lines on stdin, each answered with one JSON line on stdout:
//   {"cmd": "hello"}                                   -> {"ev": "hello", "result": {...}}
//   {"cmd": "request", "op": OP, ...fields, "session": true|false}
//                                                      -> {"ev": "reply", "op", "ok", "result"|"error"}
//   {"cmd": "many", "op": OP, "requests": [{...}, ...]} (all sent before any reply is read)
//                                                      -> {"ev": "replies", "op", "replies": [...]}
//   {"cmd": "exit"}                                    -> bye, close, exit 0
// and tells, unasked, every diff the node pushes: {"ev": "diff", "topic", "joins", "leaves"}.
import { Dealer } from "zeromq"
import readline from "node:readline"

const [endpoint, clientId] = process.argv.slice(2)
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n")

const sock = new Dealer({ linger: 0 })
sock.connect(endpoint)

// one send at a time (zeromq v6 allows one send in progress), in order
let sending = Promise.resolve()
const send = (frame) => (sending = sending.then(() => sock.send(frame)))

let nextId = 0
const pending = new Map() // request id -> resolve(reply)
let token = null
let ops = null

function request(op, fields = {}, withToken = false) {
  // the protocol: {"v": 1, "id": ID, "op": OP, ...fields}; ID unique among outstanding
  if (ops !== null && !ops.includes(op)) {
    return Promise.reject(new Error(`the node does not serve ${op} (ops: ${ops})`))
  }
  const id = ++nextId
  const body = { v: 1, id, op, ...fields }
  if (withToken) body.token = token
  const reply = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id)
      reject(new Error(`${op}: no reply within 10 s`))
    }, 10_000)
    pending.set(id, (message) => {
      clearTimeout(timer)
      resolve(message)
    })
  })
  send(JSON.stringify(body))
  return reply
}

async function readLoop() {
  for await (const [frame] of sock) {
    const message = JSON.parse(frame.toString("utf8"))
    if (message.v !== 1) continue
    if (message.event !== undefined) {
      // a push: a diff of a subscribed topic (unknown event kinds are ignored)
      if (message.event === "diff") {
        emit({ ev: "diff", topic: message.topic, joins: message.joins, leaves: message.leaves })
      }
      continue
    }
    const resolve = pending.get(message.id)
    if (resolve !== undefined) {
      pending.delete(message.id)
      resolve(message)
    }
  }
}

let heartbeat = null

async function hello() {
  const reply = await request("hello", { client: clientId, lease: 6 })
  if (!reply.ok) throw new Error(`hello refused: ${JSON.stringify(reply.error)}`)
  token = reply.result.token
  // a node of the first release lists no ops: it serves the first release's eleven
  ops = reply.result.ops ?? [
    "hello", "heartbeat", "bye", "track", "update", "untrack", "subscribe",
    "unsubscribe", "list", "get_by_key", "status",
  ]
  clearInterval(heartbeat)
  heartbeat = setInterval(() => {
    request("heartbeat", {}, true).catch(() => {})
  }, reply.result.heartbeat * 1000)
  return reply.result
}

function answer(op, reply) {
  return reply.ok
    ? { ev: "reply", op, ok: true, result: reply.result }
    : { ev: "reply", op, ok: false, error: reply.error }
}

async function handle(cmd) {
  const { cmd: name, op, session = true, requests, ...fields } = cmd
  switch (name) {
    case "hello":
      return { ev: "hello", result: await hello() }
    case "request":
      return answer(op, await request(op, fields, session))
    case "many": {
      // pipelined: every request goes out before the first reply is awaited
      const replies = await Promise.all(requests.map((f) => request(op, f, session)))
      return { ev: "replies", op, replies: replies.map((r) => answer(op, r)) }
    }
    default:
      return { ev: "bad", error: `unknown command ${name}` }
  }
}

async function exit() {
  clearInterval(heartbeat)
  if (token !== null) {
    await request("bye", {}, true).catch(() => {})
  }
  sock.close()
  process.exit(0)
}

readLoop().catch((error) => {
  emit({ ev: "bad", error: String(error && error.stack || error) })
})

const lines = readline.createInterface({ input: process.stdin })
lines.on("line", (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (error) {
    emit({ ev: "bad", error: String(error), line })
    return
  }
  if (cmd.cmd === "exit") {
    exit()
    return
  }
  handle(cmd).then(emit, (error) => emit({ ev: "bad", error: String(error && error.stack || error) }))
})
lines.on("close", exit)
