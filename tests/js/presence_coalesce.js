// The phoenix npm client's Presence.syncDiff applied to a diff sequence and to one merged
// diff (tests/test_coalesce_js.py), driven by JSON lines on stdin.
//
// Each input line is {"state": <presence_state payload>, "diffs": [<presence_diff
// payload>, ...], "merged": <presence_diff payload>}. For it this prints one line:
//   {"sequence": [S0, S1, ..., Sn], "merged": [M0, M1, ..., Mn]}
// where S0 is Presence.syncState({}, state), Sk is S(k-1) with diffs[k-1] applied by
// Presence.syncDiff, and Mk is Sk with the merged diff applied (a client that got its
// presence_state after k of the diffs); or {"error": "..."} for a line it cannot read.
// It exits when stdin closes.
"use strict"

const readline = require("node:readline")
const {Presence} = require("phoenix")

// a deep copy that keeps the state a null-prototype object ("__proto__" is a plain key)
const copy = (state) => Presence.toNullProtoObj(JSON.parse(JSON.stringify(state)))

const input = readline.createInterface({input: process.stdin, crlfDelay: Infinity})

input.on("line", (line) => {
  if (!line.trim()) { return }
  let out
  try {
    const msg = JSON.parse(line)
    let state = Presence.syncState(Object.create(null), msg.state)
    const sequence = [copy(state)]
    for (const diff of msg.diffs) {
      state = Presence.syncDiff(state, diff)
      sequence.push(copy(state))
    }
    const merged = sequence.map((s) => Presence.syncDiff(copy(s), msg.merged))
    out = {sequence: sequence, merged: merged}
  } catch (err) {
    out = {error: String(err && err.stack || err)}
  }
  process.stdout.write(JSON.stringify(out) + "\n")
})
