// The phoenix npm client's Presence, driven by JSON lines on stdin (tests/test_phoenix_js.py).
//
// Each input line is one of
//   {"state": <presence_state payload>}   -> Presence.syncState(state, payload, onJoin, onLeave)
//   {"diff": <presence_diff payload>}     -> Presence.syncDiff(state, payload, onJoin, onLeave)
// and for each one this prints one line:
//   {"state": <the client's state>, "list": Presence.list(state),
//    "joined": [keys onJoin saw], "left": [keys onLeave saw]}
// or {"error": "..."} for a line it cannot read. It exits when stdin closes.
"use strict"

const readline = require("node:readline")
// "phoenix" resolves to priv/static/phoenix.cjs.js for require() (the package's "main")
const {Presence} = require("phoenix")

// as a Presence instance starts: a null-prototype object, so "__proto__" is a plain key
let state = Object.create(null)
const input = readline.createInterface({input: process.stdin, crlfDelay: Infinity})

input.on("line", (line) => {
  if (!line.trim()) { return }
  const joined = []
  const left = []
  const onJoin = (key) => joined.push(key)
  const onLeave = (key) => left.push(key)
  let out
  try {
    const msg = JSON.parse(line)
    if ("state" in msg) {
      state = Presence.syncState(state, msg.state, onJoin, onLeave)
    } else if ("diff" in msg) {
      state = Presence.syncDiff(state, msg.diff, onJoin, onLeave)
    } else {
      throw new Error("expected a line with \"state\" or \"diff\"")
    }
    out = {state: state, list: Presence.list(state), joined: joined, left: left}
  } catch (err) {
    out = {error: String(err && err.stack || err)}
  }
  process.stdout.write(JSON.stringify(out) + "\n")
})
