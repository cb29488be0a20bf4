// Hark dashboard: the live playground. "Start" asks the server for a temporary
// streaming token minted with the chosen API key, opens /v3/ws with it, sends the
// microphone as 16 kHz 16-bit PCM in 50 ms frames (resampled by the AudioWorklet
// module named in the form's data-worklet) and shows every turn as it comes: partial
// turns change in place, a final turn is kept. "Stop" sends Terminate and waits for
// the server's Termination. Without JavaScript the form stays hidden and a note says
// why.

const form = document.getElementById("live");
if (form) {
  const note = document.getElementById("live-needs-js");
  const start = document.getElementById("live-start");
  const stop = document.getElementById("live-stop");
  const status = document.getElementById("live-status");
  const turns = document.getElementById("live-turns");
  const csrf = form.querySelector("input[name=csrf]").value;
  let session = null;

  if (note) note.hidden = true;
  form.hidden = false;

  const say = (text) => {
    status.textContent = text;
  };

  const showTurn = (message) => {
    const id = `turn-${message.turn_order}`;
    let item = document.getElementById(id);
    if (!item) {
      item = document.createElement("li");
      item.id = id;
      turns.append(item);
    }
    item.textContent = message.transcript || message.utterance || "…";
    item.className = message.end_of_turn ? "turn final" : "turn partial hint";
  };

  const release = () => {
    if (!session) return;
    const { stream, context } = session;
    if (stream) for (const track of stream.getTracks()) track.stop();
    if (context) context.close().catch(() => {});
    session = null;
    start.disabled = false;
    stop.disabled = true;
  };

  const begin = async () => {
    start.disabled = true;
    say("Asking for a token…");
    const response = await fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "X-CSRF-Token": csrf,
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams(new FormData(form)),
    });
    const minted = await response.json().catch(() => ({}));
    if (!response.ok || !minted.token) {
      throw new Error(minted.error || `The server answered ${response.status}.`);
    }
    say("Opening the microphone…");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const context = new AudioContext();
    session = { stream, context, socket: null };
    await context.audioWorklet.addModule(form.dataset.worklet);
    const source = context.createMediaStreamSource(stream);
    const frames = new AudioWorkletNode(context, "hark-pcm-frames");
    const query = new URLSearchParams({
      token: minted.token,
      sample_rate: "16000",
      encoding: "pcm_s16le",
    });
    const socket = new WebSocket(`${minted.ws_url}?${query}`);
    socket.binaryType = "arraybuffer";
    session.socket = socket;
    socket.addEventListener("open", () => {
      say("Connected. Speak now.");
      stop.disabled = false;
      frames.port.onmessage = (event) => {
        if (socket.readyState === WebSocket.OPEN) socket.send(event.data);
      };
      source.connect(frames);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "Begin") say("Listening…");
      else if (message.type === "Turn") showTurn(message);
      else if (message.type === "Termination") say("Stopped.");
      else if (message.error) say(`Error: ${message.error}`);
    });
    socket.addEventListener("close", (event) => {
      if (event.code !== 1000 && event.reason) say(`Closed: ${event.reason} (${event.code}).`);
      else if (event.code !== 1000 && status.textContent !== "Stopped.") say(`Closed (${event.code}).`);
      release();
    });
    socket.addEventListener("error", () => say("The connection failed."));
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (session) return;
    begin().catch((error) => {
      say(error.message || String(error));
      if (session && session.socket) session.socket.close();
      release();
    });
  });

  stop.addEventListener("click", () => {
    if (!session) return;
    stop.disabled = true;
    say("Stopping…");
    const { socket, stream } = session;
    if (stream) for (const track of stream.getTracks()) track.stop();
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "Terminate" }));
    } else {
      release();
    }
  });
}
