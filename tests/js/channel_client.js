// One phoenix.js client, the real Socket, Channel and Presence of the phoenix npm package
// over the `ws` WebSocket (Node.js 20 has no global WebSocket), driven by JSON lines on
// stdin and telling everything it sees as JSON lines on stdout (tests/test_channels_js.py).
//
// Commands, one JSON object per line (an unknown or broken one is answered with
// {"ev": "bad", "error": ...}; every other command with {"ev": "ack", "cmd": ...} once done):
//   {"cmd": "connect", "url": "ws://127.0.0.1:PORT/socket", "params": {...},
//    "authToken": "...", "origin": "http://...", "vsn": "2.0.0", "timeout": ms,
//    "heartbeatIntervalMs": ms, "reconnectAfterMs": ms, "rejoinAfterMs": ms}
//   {"cmd": "join", "topic": "room:lobby", "payload": {...}, "presence": true}
//   {"cmd": "push", "topic": "room:lobby", "event": "new_msg", "payload": {...}, "id": 7}
//   {"cmd": "leave", "topic": "room:lobby"}
//   {"cmd": "stop_heartbeat"}            the socket sends no heartbeat from now on
//   {"cmd": "disconnect"}                socket.disconnect(): no reconnect
//   {"cmd": "exit"}                      disconnect and exit (as does the end of stdin)
//
// Events, one JSON object per line:
//   {"ev": "open"} / {"ev": "close", "code", "reason", "wasClean"} / {"ev": "error", "message"}
//   {"ev": "join", "topic", "status": "ok"|"error"|"timeout", "response"}  (every rejoin too)
//   {"ev": "reply", "topic", "event", "id", "status", "response"}          (a push's reply)
//   {"ev": "leave", "topic", "status"}
//   {"ev": "message", "topic", "event", "payload"}   any other event the channel receives,
//                                                    presence_state and presence_diff included
//   {"ev": "chan_error", "topic", "reason"} / {"ev": "chan_close", "topic", "payload"}
//   {"ev": "sync", "topic", "presences": [{"key", "metas"}, ...]}  Presence.onSync, by key
"use strict"

const readline = require("node:readline")
const {Socket, Presence} = require("phoenix")
const WebSocket = require("ws")

let socket = null
const channels = new Map() // topic -> Channel (the latest join of that topic)

function emit(event){ process.stdout.write(JSON.stringify(event) + "\n") }

// a fixed delay instead of phoenix.js's back-off, so that tests wait less (the option is
// phoenix.js's own: reconnectAfterMs and rejoinAfterMs take the number of tries)
const fixed = (ms) => (ms === undefined ? undefined : () => ms)

function transportFor(origin){
  if(!origin){ return WebSocket }
  // a browser sends Origin; ws sends none unless asked (phoenix.js calls new T(url, protocols))
  return class OriginWebSocket extends WebSocket {
    constructor(url, protocols){ super(url, protocols, {origin}) }
  }
}

function connect(cmd){
  if(socket){ throw new Error("already connected: one socket per client") }
  socket = new Socket(cmd.url, {
    transport: transportFor(cmd.origin),
    params: cmd.params || {},
    authToken: cmd.authToken,
    vsn: cmd.vsn,
    timeout: cmd.timeout,
    heartbeatIntervalMs: cmd.heartbeatIntervalMs,
    reconnectAfterMs: fixed(cmd.reconnectAfterMs),
    rejoinAfterMs: fixed(cmd.rejoinAfterMs),
  })
  socket.onOpen(() => emit({ev: "open"}))
  socket.onClose((event) => emit({
    ev: "close", code: event && event.code, reason: event && String(event.reason || ""),
    wasClean: event && event.wasClean,
  }))
  socket.onError((error) => emit({ev: "error", message: String(error && (error.message || error.type) || error)}))
  socket.connect()
}

function requireSocket(){
  if(!socket){ throw new Error("not connected: send connect first") }
  return socket
}

function requireChannel(topic){
  const channel = channels.get(topic)
  if(!channel){ throw new Error(`no channel for topic ${JSON.stringify(topic)}: join it first`) }
  return channel
}

function join(cmd){
  const topic = cmd.topic
  const channel = requireSocket().channel(topic, cmd.payload || {})
  channels.set(topic, channel)
  const ours = () => channels.get(topic) === channel
  channel.onMessage = (event, payload, _ref) => {
    // replies are told by the push that waits for them; close and error by their hooks
    if(ours() && !event.startsWith("chan_reply_") && event !== "phx_reply" &&
       event !== "phx_close" && event !== "phx_error"){
      emit({ev: "message", topic, event, payload})
    }
    return payload
  }
  channel.onError((reason) => emit({ev: "chan_error", topic, reason: reason === undefined ? null : reason}))
  channel.onClose((payload) => emit({ev: "chan_close", topic, payload: payload === undefined ? null : payload}))
  if(cmd.presence){
    const presence = new Presence(channel)
    presence.onSync(() => {
      const presences = presence.list((key, p) => ({key, metas: p.metas}))
      presences.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      emit({ev: "sync", topic, presences})
    })
  }
  const push = channel.join()
  for(const status of ["ok", "error", "timeout"]){
    push.receive(status, (response) => emit({ev: "join", topic, status, response: response === undefined ? null : response}))
  }
}

function push(cmd){
  const channel = requireChannel(cmd.topic)
  const pushed = channel.push(cmd.event, cmd.payload || {})
  for(const status of ["ok", "error", "timeout"]){
    pushed.receive(status, (response) => emit({
      ev: "reply", topic: cmd.topic, event: cmd.event, id: cmd.id === undefined ? null : cmd.id,
      status, response: response === undefined ? null : response,
    }))
  }
}

function leave(cmd){
  const channel = requireChannel(cmd.topic)
  const pushed = channel.leave()
  for(const status of ["ok", "error", "timeout"]){
    pushed.receive(status, () => emit({ev: "leave", topic: cmd.topic, status}))
  }
}

function stopHeartbeat(){
  const s = requireSocket()
  s.sendHeartbeat = () => {} // phoenix.js calls it from its heartbeat timer
  s.clearHeartbeats()
}

function finish(){
  if(socket){ socket.disconnect() }
  // a moment for the close frame to go out; ws then ends the TCP connection
  setTimeout(() => process.exit(0), 100)
}

const COMMANDS = {
  connect,
  join,
  push,
  leave,
  stop_heartbeat: stopHeartbeat,
  disconnect: () => requireSocket().disconnect(),
  exit: finish,
}

const input = readline.createInterface({input: process.stdin, crlfDelay: Infinity})
input.on("line", (line) => {
  if(!line.trim()){ return }
  let cmd
  try {
    cmd = JSON.parse(line)
    const run = COMMANDS[cmd.cmd]
    if(!run){ throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`) }
    run(cmd)
  } catch (err){
    emit({ev: "bad", error: String(err && err.stack || err), line})
    return
  }
  if(cmd.cmd !== "exit"){ emit({ev: "ack", cmd: cmd.cmd}) }
})
input.on("close", finish)
