// The official AssemblyAI Node SDK (npm `assemblyai`), unmodified, streaming to a running
// `hark serve --tls-self-signed` over wss (driven by crates/hark/tests/sdk_streaming.rs).
//
// Environment: HARK_STREAM_HOST (host:port), HARK_API_KEY, HARK_TEST_JFK_WAV,
// HARK_NODE_MODULES (where `assemblyai` is installed) and NODE_EXTRA_CA_CERTS (the
// server's development certificate).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

const require = createRequire(`${process.env.HARK_NODE_MODULES}/`);
const { AssemblyAI } = require("assemblyai");

const HOST = process.env.HARK_STREAM_HOST;
const API_KEY = process.env.HARK_API_KEY;
const JFK =
  "and so my fellow americans ask not what your country can do for you " +
  "ask what you can do for your country";

const words = (text) => text.toLowerCase().replace(/[^a-z' ]/g, " ").split(/\s+/).filter(Boolean);

function wer(ref, hyp) {
  const r = words(ref);
  const h = words(hyp);
  let d = Array.from({ length: h.length + 1 }, (_, j) => j);
  for (let i = 1; i <= r.length; i++) {
    const next = [i];
    for (let j = 1; j <= h.length; j++) {
      next[j] = Math.min(d[j] + 1, next[j - 1] + 1, d[j - 1] + (r[i - 1] === h[j - 1] ? 0 : 1));
    }
    d = next;
  }
  return d[h.length] / r.length;
}

/** The WAV's 16-kHz s16le samples (after the 44-byte RIFF header). */
function pcm() {
  const wav = readFileSync(process.env.HARK_TEST_JFK_WAV);
  const data = wav.indexOf(Buffer.from("data"));
  assert.ok(data > 0, "no data chunk");
  return wav.subarray(data + 8);
}

async function streamRealTime(transcriber, audio, pace = 1.0) {
  const step = 3200; // 100 ms
  const padded = Buffer.concat([audio, Buffer.alloc(32000)]);
  const started = Date.now();
  for (let i = 0; i + step <= padded.length; i += step) {
    const due = started + ((i / 32000) * 1000) / pace;
    const delay = due - Date.now();
    if (delay > 0) await sleep(delay);
    transcriber.sendAudio(padded.subarray(i, i + step));
  }
}

function collect(transcriber) {
  const seen = { open: [], turns: [], close: [], errors: [] };
  transcriber.on("open", (m) => seen.open.push(m));
  transcriber.on("turn", (m) => seen.turns.push(m));
  transcriber.on("close", (code, reason) => seen.close.push({ code, reason }));
  transcriber.on("error", (e) => seen.errors.push(e));
  return seen;
}

test("token session over wss transcribes real speech; the token is single use", async () => {
  const client = new AssemblyAI({ apiKey: API_KEY, streamingBaseUrl: `https://${HOST}` });
  const token = await client.streaming.createTemporaryToken({ expires_in_seconds: 60 });
  assert.match(token, /^hark_tmp_/);

  const transcriber = client.streaming.transcriber({
    token,
    websocketBaseUrl: `wss://${HOST}/v3/ws`,
    sampleRate: 16000,
    formatTurns: true,
  });
  const seen = collect(transcriber);
  await transcriber.connect();
  await streamRealTime(transcriber, pcm());
  // Generous: a loaded CI machine may lag behind real time.
  await transcriber.close(true, 60000);

  assert.deepEqual(seen.errors, []);
  assert.equal(seen.open.length, 1);
  assert.ok(seen.open[0].id);
  const finals = seen.turns.filter((t) => t.end_of_turn && t.turn_is_formatted);
  const text = finals.map((t) => t.transcript).join(" ");
  assert.ok(wer(JFK, text) <= 0.15, text);
  assert.ok(seen.turns.some((t) => !t.end_of_turn), "no partial turns");
  // close() resolved on the server's Termination; any close seen was a clean one.
  assert.ok(seen.close.every(({ code }) => code === 1000), JSON.stringify(seen.close));

  const again = client.streaming.transcriber({
    token,
    websocketBaseUrl: `wss://${HOST}/v3/ws`,
    sampleRate: 16000,
  });
  await assert.rejects(again.connect(), (err) => {
    assert.equal(err.code, 1008);
    assert.match(err.message, /already been used/);
    return true;
  });
});

test("an API key streams directly", async () => {
  const client = new AssemblyAI({ apiKey: API_KEY });
  const transcriber = client.streaming.transcriber({
    websocketBaseUrl: `wss://${HOST}/v3/ws`,
    sampleRate: 16000,
    minTurnSilence: 300,
  });
  const seen = collect(transcriber);
  await transcriber.connect();
  await streamRealTime(transcriber, pcm().subarray(0, 16000 * 2 * 4.5), 1.5);
  // Generous: a loaded CI machine may lag behind real time.
  await transcriber.close(true, 60000);
  assert.deepEqual(seen.errors, []);
  const text = seen.turns.filter((t) => t.end_of_turn).map((t) => t.transcript).join(" ");
  assert.ok(words(text).includes("americans"), text);
});
