// Hark dashboard: the live playground's AudioWorklet. It takes the microphone's first
// channel at the context's sample rate, resamples it to 16 kHz (linear interpolation,
// after a simple averaging low-pass when downsampling), converts it to 16-bit PCM and
// posts one frame of 50 ms (800 samples) at a time to the page.

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 800;

class PcmFrames extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples
    this.prev = 0; // the last input sample of the previous block
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    const n = channel.length;
    const span = Math.max(1, Math.floor(this.step));
    while (this.pos < n) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.prev : channel[i - 1];
      const b = channel[i];
      let value = a + (b - a) * frac;
      if (span > 1) {
        // Average the input samples this output sample stands for (anti-aliasing).
        let sum = 0;
        let count = 0;
        for (let j = Math.max(0, i - span + 1); j <= i; j++) {
          sum += channel[j];
          count++;
        }
        value = sum / count;
      }
      const clamped = Math.max(-1, Math.min(1, value));
      this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
      if (this.filled === FRAME_SAMPLES) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
        this.frame = new Int16Array(FRAME_SAMPLES);
        this.filled = 0;
      }
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = channel[n - 1];
    return true;
  }
}

registerProcessor("hark-pcm-frames", PcmFrames);
