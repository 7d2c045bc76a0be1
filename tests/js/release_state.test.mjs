// The portal's reducer (services/gateway/static/release_state.js) against the golden sequences
// that pytest runs against ferry.domain.release.evolve and ferry.domain.views (tests/contract).
// Run: node --test tests/js/   (tests/contract/test_js_reducer.py runs it under pytest)

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  EVENT_TYPES,
  HOST_STEPS,
  MODEL,
  TERMINAL,
  UnknownEventType,
  apply,
  initialState,
  isTerminal,
  replay,
  summary,
} from "../../services/gateway/static/release_state.js";

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, "..", "contract", "sequences");
const sequences = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => ({ name: f.replace(/\.json$/, ""), ...JSON.parse(readFileSync(join(dir, f), "utf8")) }));
const stored = (events) => events.map((event, i) => ({ seq: i + 1, event }));

test("there are golden sequences", () => {
  assert.ok(sequences.length >= 5, `only ${sequences.length} sequences in ${dir}`);
});

for (const seq of sequences) {
  test(`golden sequence ${seq.name}: the reducer's state is the expected one`, () => {
    const state = replay(`golden-${seq.name}`, stored(seq.events));
    assert.deepEqual(summary(state), seq.expected);
    assert.equal(state.last_seq, seq.events.length);
  });

  test(`golden sequence ${seq.name}: an event type the model lacks is refused`, () => {
    const fake = { ...seq.events[seq.events.length - 1], type: "release.teleported" };
    assert.throws(() => replay("fake", stored([...seq.events, fake])), UnknownEventType);
  });
}

test("the golden sequences use every event type of the model", () => {
  const used = new Set(sequences.flatMap((s) => s.events.map((e) => e.type)));
  assert.deepEqual([...used].sort(), [...EVENT_TYPES].sort());
});

test("exactly the model's terminal event types end a release", () => {
  const ends = new Set(MODEL.terminal_event_types);
  for (const seq of sequences) {
    let state = initialState(`golden-${seq.name}`);
    seq.events.forEach((event, i) => {
      state = apply(state, i + 1, event);
      if (ends.has(event.type)) assert.ok(isTerminal(state), `${seq.name}: ${event.type} did not end it`);
      else assert.ok(!isTerminal(state), `${seq.name}: ${event.type} ended it`);
    });
  }
});

test("the reducer's words are the generated model's", () => {
  assert.deepEqual([...HOST_STEPS], MODEL.host_steps);
  assert.deepEqual([...TERMINAL].sort(), [...MODEL.terminal_statuses].sort());
  for (const type of MODEL.terminal_event_types) assert.ok(EVENT_TYPES.has(type), type);
});

test("a type of the model the reducer has no case for is refused too", async () => {
  // The reducer checks the model's list first; a type the list has but the switch lacks reaches
  // the switch's default. Both throw the same error.
  const { evolve, initialState } = await import("../../services/gateway/static/release_state.js");
  MODEL.event_types.push("release.forgotten");
  EVENT_TYPES.add("release.forgotten");
  try {
    assert.throws(() => evolve(initialState("r"), { type: "release.forgotten", version: 1 }), UnknownEventType);
  } finally {
    MODEL.event_types.pop();
    EVENT_TYPES.delete("release.forgotten");
  }
});
