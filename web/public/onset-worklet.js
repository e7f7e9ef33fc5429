// Runs on the audio thread, so it sees every sample whatever the page's frame rate: posts the
// context time where the bot's voice starts after a quiet stretch, and how long it was quiet;
// and, while a quiet stretch goes on past the rule's pause, where it began (every
// `quietReportMs`, up to `quietReportMaxMs`): the page learns the voice has ended.
// Same rule as the bot's stack.lipsync.voice_onset_ms and voice_pauses_ms, with its numbers
// (src/gen/onset.ts, passed by src/audio.ts): the first sample reaching `sampleLevel` of the
// first `windowMs` window whose RMS reaches `level`, after at least `pauseMinMs` of quiet ones.
class Onset extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rule = options.processorOptions;
    this.level = rule.level;
    this.sampleLevel = rule.sampleLevel;
    this.quietNeeded = rule.pauseMinMs / 1000;
    this.quietFor = 0;
    this.quietFrom = 0; // context time the quiet stretch began
    this.reported = 0; // quiet reported so far in this stretch, s
    this.reportEvery = rule.quietReportMs / 1000;
    this.reportMax = rule.quietReportMaxMs / 1000;
    this.win = new Float32Array(Math.round((sampleRate * rule.windowMs) / 1000));
    this.fill = 0;
    this.winStart = 0; // context time of the window's first sample
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      if (this.fill === 0) this.winStart = currentTime + i / sampleRate;
      this.win[this.fill++] = ch[i];
      if (this.fill === this.win.length) this.windowDone();
    }
    return true;
  }
  windowDone() {
    const w = this.win;
    this.fill = 0;
    let sum = 0;
    for (let i = 0; i < w.length; i++) sum += w[i] * w[i];
    if (Math.sqrt(sum / w.length) < this.level) {
      if (this.quietFor === 0) this.quietFrom = this.winStart;
      this.quietFor += w.length / sampleRate;
      if (this.quietFor >= this.quietNeeded && this.quietFor <= this.reportMax
        && (this.reported === 0 || this.quietFor - this.reported >= this.reportEvery)) {
        this.reported = this.quietFor;
        this.port.postMessage({ kind: "quiet", time: this.quietFrom, quiet: this.quietFor });
      }
      return;
    }
    if (this.quietFor >= this.quietNeeded) {
      let first = 0;
      while (first < w.length - 1 && Math.abs(w[first]) < this.sampleLevel) first++;
      this.port.postMessage({ kind: "onset", time: this.winStart + first / sampleRate, quiet: this.quietFor });
    }
    this.quietFor = 0;
    this.reported = 0;
  }
}
registerProcessor("onset", Onset);
