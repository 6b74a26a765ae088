// A Node.js program profiled by the Pyroscope SDK (@pyroscope/nodejs), unchanged,
// pointed at hotframe: `node pyroscope_node.js SERVER_URL SECONDS`. It burns CPU in
// `nodeHotSpin` (yielding to the event loop so the SDK can upload), then stops the SDK
// (which sends the last profile) and exits. tests/it/sdk.rs runs it.
'use strict';
const Pyroscope = require('@pyroscope/nodejs');

const [server, secondsText] = process.argv.slice(2);
const seconds = Number(secondsText);
if (!server || !(seconds > 0)) {
  console.error('usage: node pyroscope_node.js SERVER_URL SECONDS');
  process.exit(2);
}

function nodeHotSpin(ms) {
  const until = Date.now() + ms;
  let x = 0;
  while (Date.now() < until) {
    for (let i = 0; i < 100000; i++) x = (x * 31 + i) % 1000003;
  }
  return x;
}

async function main() {
  Pyroscope.init({ serverAddress: server, appName: 'pyro-node', tags: { env: 'sdk-test' }, flushIntervalMs: 1000 });
  Pyroscope.start();
  const end = Date.now() + seconds * 1000;
  let x = 0;
  while (Date.now() < end) {
    x += nodeHotSpin(50);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Pyroscope.stop();
  console.log(`done ${x}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
