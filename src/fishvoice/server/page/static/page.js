// The fishvoice page: a live conversation over the realtime WebSocket (/v1/realtime, OpenAI's Realtime
// API events). The microphone goes out as 24 kHz PCM chunks (capture.js); the reply's text shows as it
// streams and its audio plays as it arrives, chunk after chunk. State is visible, in words, and exposed
// for tests on <body>: data-state (idle, connecting, ready, listening, thinking, speaking), data-mic
// (on while the microphone is open) and data-audio-chunks / data-audio-ms (reply audio played so far).
// The session asks for word timestamps (fishvoice's `response.output_audio.words`): the word of the reply
// being heard is highlighted as its audio plays.

const RATE = 24000;
const MIN_PUSH_MS = 200; // a shorter hold is taken for a slip of the finger, not speech
const $ = (id) => document.getElementById(id);

const page = {
  ws: null,
  connected: false, // the session was created
  connecting: false,
  closing: false, // the user stopped it: a close is no error
  conversationId: newConversationId(),
  context: null, // AudioContext, at 24 kHz where the browser allows
  mic: null, // MediaStream
  capture: null, // AudioWorkletNode
  source: null, // MediaStreamAudioSourceNode
  held: false, // hold-to-talk: the button or key is down
  releasing: false, // hold-to-talk: let go, waiting for the capture's last chunk
  heldMs: 0, // audio sent since the hold began
  userSpeaking: false, // hands-free: the server heard speech start and not yet stop
  waiting: false, // a reply is due: the turn was committed, or a response runs
  response: null, // the id of the response in progress
  interrupted: new Set(), // responses cut short: their late audio is dropped
  entries: new Map(), // conversation entries by item id or response id
  playing: [], // scheduled reply chunks not yet ended: {node, item, start, duration}
  playedMs: new Map(), // reply audio played so far, by assistant item
  lastItem: null, // the assistant item whose audio came last
  lastItemResponse: null, // and the response it belongs to
  itemResponses: new Map(), // the response of each assistant item that brought audio
  nextStart: 0, // when the next reply chunk starts, on the AudioContext's clock
  texts: new Map(), // the reply's text so far, by response
  words: new Map(), // the reply's timed words, by response: {word, start, end} in seconds of its audio
  scheduledMs: new Map(), // reply audio scheduled so far, by response: where its next chunk begins
  chunks: 0,
  audioMs: 0,
};

function newConversationId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

// ---- what the page shows ----

const STATES = {
  idle: "Not connected",
  connecting: "Connecting…",
  ready: "Ready: hold the Talk button or Space to speak",
  listening: "Listening",
  hearing: "Listening: hearing you",
  thinking: "Thinking…",
  speaking: "Speaking (talk to interrupt)",
};

function refresh() {
  let state;
  if (page.connecting) state = "connecting";
  else if (!page.connected) state = "idle";
  else if (page.held || page.userSpeaking) state = "hearing";
  else if (page.playing.length > 0) state = "speaking";
  else if (page.waiting || page.releasing) state = "thinking";
  else state = mode() === "hands-free" ? "listening" : "ready";
  document.body.dataset.state = state === "hearing" ? "listening" : state;
  const text = STATES[state];
  if ($("state-text").textContent !== text) $("state-text").textContent = text;
  $("connect").textContent = page.connected || page.connecting ? "Stop" : "Start";
  $("talk").disabled = !page.connected || mode() !== "push-to-talk";
  $("talk").setAttribute("aria-pressed", String(page.held));
  $("talk").textContent = page.held ? "Listening… let go to send" : "Hold to talk";
}

function showPlayed() {
  document.body.dataset.audioChunks = String(page.chunks);
  document.body.dataset.audioMs = String(Math.round(page.audioMs));
  const plural = page.chunks === 1 ? "chunk" : "chunks";
  $("playback").textContent = `Played ${page.chunks} audio ${plural} (${(page.audioMs / 1000).toFixed(1)} s)`;
}

function showError(message) {
  $("error").hidden = false;
  $("error").textContent = message;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function announce(text) {
  $("announce").textContent = text;
}

function entry(key, role) {
  let li = page.entries.get(key);
  if (!li) {
    li = document.createElement("li");
    li.className = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const text = document.createElement("p");
    text.className = "text";
    li.append(who, text);
    $("conversation").append(li);
    $("conversation-empty").hidden = true;
    page.entries.set(key, li);
  }
  return li;
}

function setText(li, text, pending = false) {
  li.querySelector(".text").textContent = text;
  li.classList.toggle("pending", pending);
  li.scrollIntoView({ block: "nearest" });
}

function appendText(key, delta) {
  const li = entry(key, "assistant");
  page.texts.set(key, (li.classList.contains("pending") ? "" : page.texts.get(key) || "") + delta);
  li.classList.remove("pending");
  renderReply(key);
  li.scrollIntoView({ block: "nearest" });
}

// The reply's text, its timed words (the first words of the text, in order) each a <span> to highlight.
function renderReply(key) {
  const li = page.entries.get(key);
  if (!li) return;
  const text = li.querySelector(".text");
  const timed = page.words.get(key) || [];
  const parts = (page.texts.get(key) || "").split(/(\s+)/);
  text.replaceChildren();
  let next = 0;
  for (const part of parts) {
    if (next < timed.length && /[\p{L}\p{N}]/u.test(part)) { // as the server counts words: with a letter or digit
      const span = document.createElement("span");
      span.className = "word";
      span.textContent = part;
      span.dataset.start = timed[next].start;
      span.dataset.end = timed[next].end;
      text.append(span);
      next += 1;
    } else {
      text.append(part);
    }
  }
}

// Marks the word being heard (class "now") and those heard before it ("said"), while a reply plays.
function highlight() {
  const now = page.context ? page.context.currentTime : 0;
  const chunk = page.playing.find((c) => c.start <= now && now < c.start + c.duration);
  if (chunk) {
    const at = chunk.offset + (now - chunk.start);
    const li = page.entries.get(chunk.response);
    for (const span of li ? li.querySelectorAll(".word") : []) {
      span.classList.toggle("now", Number(span.dataset.start) <= at && at < Number(span.dataset.end));
      span.classList.toggle("said", Number(span.dataset.end) <= at);
    }
  }
  if (page.playing.length) requestAnimationFrame(highlight);
}

function markInterrupted(li) {
  if (li && !li.querySelector(".note")) {
    const note = document.createElement("span");
    note.className = "note";
    note.textContent = "(interrupted)";
    li.append(note);
  }
}

// ---- the socket ----

function send(event) {
  if (page.ws && page.ws.readyState === WebSocket.OPEN) page.ws.send(JSON.stringify(event));
}

function sessionUpdate() {
  const handsFree = mode() === "hands-free";
  send({
    type: "session.update",
    session: {
      type: "realtime",
      instructions: $("instructions").value,
      audio: {
        input: {
          format: { type: "audio/pcm", rate: RATE },
          turn_detection: handsFree
            ? {
                type: "server_vad",
                threshold: 0.5,
                prefix_padding_ms: 300,
                silence_duration_ms: 500,
                create_response: true,
                interrupt_response: true,
              }
            : null,
        },
        output: { format: { type: "audio/pcm", rate: RATE }, voice: $("voice").value },
      },
      word_timestamps: true,
    },
  });
}

// A client secret for this conversation, minted with the key (POST /v1/realtime/client_secrets), valid a minute:
// long enough to open the socket, which then lives on.
async function clientSecret(key) {
  const answer = await fetch("/v1/realtime/client_secrets", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 60 } }),
  });
  if (answer.status === 401) {
    $("key-row").hidden = false;
    throw new Error("the API key was refused. Check the API key under Settings.");
  }
  if (!answer.ok) throw new Error(`the server answered ${answer.status} to the client secret's request`);
  return (await answer.json()).value;
}

function realtimeUrl() {
  const url = new URL("/v1/realtime", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("model", "fishvoice");
  url.searchParams.set("conversation_id", page.conversationId);
  return url.href;
}

async function start() {
  clearError();
  page.connecting = true;
  page.closing = false;
  refresh();
  try {
    await startAudio(); // first, while the click still counts as the user's gesture
  } catch (error) {
    page.connecting = false;
    refresh();
    showError(`The audio could not start: ${error.message}`);
    return;
  }
  const key = $("key").value.trim();
  let ws;
  try {
    // The key itself never goes into the socket's handshake: a short-lived client secret minted with it does.
    const secret = key ? await clientSecret(key) : null;
    ws = secret ? new WebSocket(realtimeUrl(), ["realtime", `openai-insecure-api-key.${secret}`]) : new WebSocket(realtimeUrl());
  } catch (error) {
    page.connecting = false;
    refresh();
    showError(`Could not connect: ${error.message}`);
    return;
  }
  page.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
  };
  ws.onmessage = (message) => {
    if (ws !== page.ws) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      showError("The server sent something that is not JSON.");
      return;
    }
    handle(event);
  };
  ws.onclose = (close) => {
    if (ws !== page.ws) return;
    const expected = page.closing;
    stop();
    if (!expected) {
      const said = $("error").hidden ? "" : `${$("error").textContent} `; // the server's error event, if any
      const reason = close.reason ? `: ${close.reason}` : "";
      const what = opened ? "The connection closed" : "Could not connect to the assistant";
      let hint = "";
      if (close.reason === "unauthorized" || (!opened && !key)) {
        hint = key ? " Check the API key under Settings." : " If the server needs a key, enter it under Settings.";
        $("key-row").hidden = false;
      }
      showError(`${said}${what} (code ${close.code}${reason}).${hint}`);
    }
  };
}

function stop() {
  page.closing = true;
  if (page.ws) {
    const ws = page.ws;
    page.ws = null;
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, "stopped");
  }
  stopMic();
  stopPlayback();
  Object.assign(page, {
    connected: false,
    connecting: false,
    held: false,
    releasing: false,
    userSpeaking: false,
    waiting: false,
    response: null,
  });
  refresh();
}

function handle(event) {
  switch (event.type) {
    case "session.created":
      page.connected = true;
      page.connecting = false;
      sessionUpdate();
      startMic();
      if (mode() === "push-to-talk" && document.activeElement === $("connect")) {
        refresh();
        $("talk").focus(); // so that Space talks rather than presses Stop
      }
      break;
    case "session.updated":
      break;
    case "input_audio_buffer.speech_started":
      page.userSpeaking = true;
      if (replyUnderway()) bargeIn(false); // the server cancels the reply itself (interrupt_response)
      break;
    case "input_audio_buffer.speech_stopped":
      page.userSpeaking = false;
      page.waiting = true;
      break;
    case "input_audio_buffer.committed":
      page.waiting = true;
      setText(entry(event.item_id, "user"), "…", true);
      break;
    case "conversation.item.input_audio_transcription.completed": {
      const heard = (event.transcript || "").trim();
      setText(entry(event.item_id, "user"), heard || "(nothing heard)");
      if (heard) announce(`You said: ${heard}`);
      break;
    }
    case "conversation.item.input_audio_transcription.failed": {
      const why = event.error?.message || "the speech was not recognised";
      setText(entry(event.item_id, "user"), `(not understood: ${why})`);
      page.waiting = page.response !== null;
      break;
    }
    case "response.created": {
      page.response = event.response.id;
      page.waiting = true;
      const li = entry(event.response.id, "assistant");
      setText(li, "…", true);
      li.setAttribute("aria-busy", "true");
      break;
    }
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta":
      if (!page.interrupted.has(event.response_id)) appendText(event.response_id || page.response, event.delta);
      break;
    case "response.output_audio.words":
      page.words.set(event.response_id, [...(page.words.get(event.response_id) || []), ...event.words]);
      renderReply(event.response_id);
      break;
    case "response.output_audio.delta":
      if (!page.interrupted.has(event.response_id)) play(event.response_id, event.item_id, event.delta);
      break;
    case "response.done": {
      const { id, status } = event.response;
      const li = page.entries.get(id);
      if (li) li.setAttribute("aria-busy", "false");
      if (status === "cancelled") markInterrupted(li);
      if (status === "failed") {
        const detail = event.response.status_details?.error?.message;
        showError(`The reply failed${detail ? `: ${detail}` : "."}`);
      }
      if (li && li.classList.contains("pending")) setText(li, status === "completed" ? "(no reply)" : "");
      if (li && status === "completed") announce(`Assistant: ${li.querySelector(".text").textContent}`);
      if (page.response === id) page.response = null;
      page.waiting = false;
      break;
    }
    case "conversation.item.truncated":
      break;
    case "input_audio_buffer.cleared":
      break;
    case "error": {
      const error = event.error || {};
      const code = error.code ? ` (${error.code})` : "";
      showError(`${error.message || "The server reported an error."}${code}`);
      page.waiting = page.response !== null;
      break;
    }
    default:
      break;
  }
  refresh();
}

// ---- audio: the microphone out, the reply in ----

async function startAudio() {
  if (!page.context) {
    try {
      page.context = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    } catch {
      page.context = new AudioContext({ latencyHint: "interactive" }); // capture.js resamples
    }
    await page.context.audioWorklet.addModule("/static/capture.js");
  }
  await page.context.resume();
}

async function startMic() {
  try {
    page.mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    showError(`The microphone could not be opened (${error.message}). You can still type a message.`);
    return;
  }
  if (!page.connected) {
    stopMic();
    return;
  }
  const context = page.context;
  page.source = context.createMediaStreamSource(page.mic);
  page.capture = new AudioWorkletNode(context, "pcm-capture", { numberOfOutputs: 1, outputChannelCount: [1] });
  page.capture.port.onmessage = (message) => captured(message.data);
  const silent = context.createGain(); // keeps the worklet pulled without making a sound
  silent.gain.value = 0;
  page.source.connect(page.capture).connect(silent).connect(context.destination);
  document.body.dataset.mic = "on";
}

function stopMic() {
  if (page.source) page.source.disconnect();
  if (page.capture) page.capture.disconnect();
  if (page.mic) page.mic.getTracks().forEach((track) => track.stop());
  page.source = page.capture = page.mic = null;
  document.body.dataset.mic = "off";
}

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function captured({ pcm, last }) {
  const sending = mode() === "hands-free" || page.held || page.releasing;
  if (sending && pcm.byteLength > 0) {
    send({ type: "input_audio_buffer.append", audio: base64(new Uint8Array(pcm)) });
    page.heldMs += (pcm.byteLength / 2 / RATE) * 1000;
  }
  if (last && page.releasing) {
    page.releasing = false;
    if (page.heldMs < MIN_PUSH_MS) {
      send({ type: "input_audio_buffer.clear" });
      showError("That was too short to hear: hold the button (or Space) for as long as you speak.");
    } else {
      send({ type: "input_audio_buffer.commit" });
      send({ type: "response.create" });
      page.waiting = true;
    }
    refresh();
  }
}

function play(response, item, delta) {
  const context = page.context;
  if (!context) return;
  const bytes = Uint8Array.from(atob(delta), (c) => c.charCodeAt(0));
  const samples = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  if (samples.length === 0) return;
  const buffer = context.createBuffer(1, samples.length, RATE);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
  const node = context.createBufferSource();
  node.buffer = buffer;
  node.connect(context.destination);
  const start = Math.max(context.currentTime + 0.05, page.nextStart);
  const offset = page.scheduledMs.get(response) || 0; // where it begins in the reply's audio, in seconds
  page.scheduledMs.set(response, offset + buffer.duration);
  const chunk = { node, item, response, start, offset, duration: buffer.duration };
  node.onended = () => {
    page.playing = page.playing.filter((other) => other !== chunk);
    page.playedMs.set(item, (page.playedMs.get(item) || 0) + chunk.duration * 1000);
    page.chunks += 1;
    page.audioMs += chunk.duration * 1000;
    showPlayed();
    refresh();
  };
  node.start(start);
  page.nextStart = start + buffer.duration;
  page.playing.push(chunk);
  if (page.playing.length === 1) requestAnimationFrame(highlight);
  page.lastItem = item;
  page.lastItemResponse = response;
  page.itemResponses.set(item, response);
}

// Stops the reply's audio at once; says which item was playing (or still coming) and how much of it
// was heard. A reply that ended and was heard whole needs no cut: then null.
function stopPlayback() {
  const underway = page.playing.length > 0 || (page.response !== null && page.response === page.lastItemResponse);
  const now = page.context ? page.context.currentTime : 0;
  for (const chunk of page.playing) {
    chunk.node.onended = null;
    chunk.node.stop();
    const heard = Math.min(Math.max(now - chunk.start, 0), chunk.duration) * 1000;
    page.playedMs.set(chunk.item, (page.playedMs.get(chunk.item) || 0) + heard);
    page.audioMs += heard;
  }
  page.playing = [];
  page.nextStart = 0;
  showPlayed();
  const item = page.lastItem;
  return underway && item ? { item, playedMs: Math.floor(page.playedMs.get(item) || 0) } : null;
}

function replyUnderway() {
  return page.playing.length > 0 || page.response !== null;
}

// The user speaks over the reply: silence it, cancel it (hold-to-talk; the server's VAD cancels it in
// hands-free mode) and tell the server how much of it was heard, so the history keeps only that.
function bargeIn(cancel) {
  const response = page.response;
  const cut = stopPlayback();
  if (response) {
    page.interrupted.add(response);
    markInterrupted(page.entries.get(response));
    if (cancel) send({ type: "response.cancel" });
  }
  if (cut) {
    // The reply may be written whole already (response.done came) while its audio still played.
    markInterrupted(page.entries.get(page.itemResponses.get(cut.item)));
    send({ type: "conversation.item.truncate", item_id: cut.item, content_index: 0, audio_end_ms: cut.playedMs });
    page.lastItem = null;
  }
}

// ---- hold to talk ----

function press() {
  if (page.held || !page.connected || mode() !== "push-to-talk") return;
  clearError();
  if (replyUnderway()) bargeIn(true);
  page.held = true;
  page.heldMs = 0;
  send({ type: "input_audio_buffer.clear" });
  refresh();
}

function release() {
  if (!page.held) return;
  page.held = false;
  if (page.capture) {
    page.releasing = true;
    page.capture.port.postMessage("flush"); // its last chunk goes out, then the commit (captured())
  } else {
    send({ type: "input_audio_buffer.clear" });
  }
  refresh();
}

function isTextEntry(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.id === "talk") return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT", "BUTTON", "A", "AUDIO"].includes(target.tagName);
}

function spaceHolds(event) {
  const key = event.code === "Space" || ((event.key === "Enter" || event.key === " ") && event.target.id === "talk");
  return key && mode() === "push-to-talk" && page.connected && !isTextEntry(event.target);
}

document.addEventListener("keydown", (event) => {
  if (!spaceHolds(event)) return;
  event.preventDefault();
  if (!event.repeat) press();
});

document.addEventListener("keyup", (event) => {
  if (!spaceHolds(event)) return;
  event.preventDefault();
  release();
});

window.addEventListener("blur", release); // a key let go in another window never comes back

// ---- the server's other routes: saved voices ----

async function api(path, options = {}) {
  const key = $("key").value.trim();
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body?.error?.message || body?.error || response.statusText;
    const error = new Error(typeof message === "string" ? message : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function loadVoices(select) {
  const chosen = select || $("voice").value;
  try {
    const body = await api("/v1/references/list");
    const ids = body.reference_ids || [];
    const options = [new Option("Default voice", "default"), ...ids.map((id) => new Option(id, id))];
    $("voice").replaceChildren(...options);
    $("voice").value = ids.includes(chosen) ? chosen : "default";
    if (!$("key").value.trim()) $("key-row").hidden = true; // the server wants no key
    else if ($("key-row").classList.contains("needed")) {
      $("key-row").classList.remove("needed");
      $("key-help").textContent = "Key accepted.";
    }
    return true;
  } catch (error) {
    if (error.status === 401) {
      $("key-row").hidden = false;
      $("key").setAttribute("aria-required", "true");
      $("key-help").textContent = "This server needs a key: enter it here, then press Refresh list or Start.";
      $("key-row").classList.add("needed");
    } else {
      $("voice-status").textContent = `The saved voices could not be listed: ${error.message}`;
    }
    return false;
  }
}

let recorder = null;
let recorded = null; // the last recording, a Blob
let recordTimer = null;

async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (error) {
    $("voice-status").textContent = `The microphone could not be opened: ${error.message}`;
    return;
  }
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => parts.push(event.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    clearInterval(recordTimer);
    recorded = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
    recorder = null;
    $("voice-file").value = "";
    $("recording").src = URL.createObjectURL(recorded);
    $("recording").hidden = false;
    $("record").textContent = "Record again";
    $("record").setAttribute("aria-pressed", "false");
    $("voice-status").textContent = "Recorded. Listen to it, name it and save it.";
  };
  const began = Date.now();
  recorder.start();
  $("record").textContent = "Stop recording";
  $("record").setAttribute("aria-pressed", "true");
  $("voice-status").textContent = "Recording: speak for 5 to 30 seconds, then stop.";
  recordTimer = setInterval(() => {
    const seconds = Math.round((Date.now() - began) / 1000);
    $("record-time").textContent = `${seconds} s`;
    if (seconds >= 30 && recorder) recorder.stop();
  }, 250);
}

async function saveVoice() {
  const name = $("voice-id").value.trim();
  const file = $("voice-file").files[0];
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(name)) {
    $("voice-status").textContent = "Give the voice a name: letters, digits and . _ : - only.";
    $("voice-id").focus();
    return;
  }
  if (!file && !recorded) {
    $("voice-status").textContent = "Record a sample or pick an audio file first.";
    return;
  }
  const form = new FormData();
  form.append("id", name);
  if (file) form.append("audio", file, file.name);
  else form.append("audio", recorded, recorded.type.includes("ogg") ? "sample.ogg" : "sample.webm");
  if ($("voice-text").value.trim()) form.append("text", $("voice-text").value.trim());
  $("save-voice").disabled = true;
  $("voice-status").textContent = "Saving…";
  try {
    await api("/v1/references/add", { method: "POST", body: form });
    await loadVoices(name);
    $("voice-status").textContent = `Saved the voice “${name}”; the assistant speaks with it now.`;
    sessionUpdate();
  } catch (error) {
    $("voice-status").textContent = `The voice was not saved: ${error.message}`;
  } finally {
    $("save-voice").disabled = false;
  }
}

// ---- wiring ----

$("connect").addEventListener("click", () => (page.connected || page.connecting ? stop() : start()));
$("new-conversation").addEventListener("click", () => {
  const wasOn = page.connected || page.connecting;
  if (wasOn) stop();
  page.conversationId = newConversationId();
  page.entries.clear();
  $("conversation").replaceChildren();
  $("conversation-empty").hidden = false;
  if (wasOn) start();
});

const talk = $("talk");
talk.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  talk.setPointerCapture(event.pointerId);
  press();
});
talk.addEventListener("pointerup", release);
talk.addEventListener("pointercancel", release);
talk.addEventListener("lostpointercapture", release);
talk.addEventListener("contextmenu", (event) => event.preventDefault());

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    release();
    sessionUpdate();
    refresh();
  });
}
$("instructions").addEventListener("change", sessionUpdate);
$("voice").addEventListener("change", sessionUpdate);
$("refresh-voices").addEventListener("click", () => loadVoices());
$("key").addEventListener("change", () => loadVoices());
$("key-row").addEventListener("submit", (event) => {
  event.preventDefault();
  loadVoices();
});
$("record").addEventListener("click", toggleRecording);
$("voice-file").addEventListener("change", () => {
  recorded = null;
  $("recording").hidden = true;
});
$("save-voice").addEventListener("click", saveVoice);
$("type-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("typed").value.trim();
  if (!text) return;
  if (!page.connected) {
    showError("Press Start first, then send your message.");
    return;
  }
  if (replyUnderway()) bargeIn(true);
  clearError();
  send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  send({ type: "response.create" });
  setText(entry(`typed-${Date.now()}`, "user"), text);
  $("typed").value = "";
  page.waiting = true;
  refresh();
});

refresh();
showPlayed();
loadVoices();
