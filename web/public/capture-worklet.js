// Measurement mode only: posts every block of the bot's received audio with its context time.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) this.port.postMessage({ time: currentTime, samples: ch.slice() });
    return true;
  }
}
registerProcessor("capture", Capture);
