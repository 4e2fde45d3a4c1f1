// The live page in a real browser (docs/live.md): Debian's Chromium, driven
// by playwright-core, opens https://127.0.0.1:PORT/live/SERIAL, signs in with
// the API's session, and plays the stream over WHEP; frames decoded are
// counted by the page (requestVideoFrameCallback). An officer out of scope
// gets 404 from the WHEP endpoint and sees "not live". Screenshots go to OUT.
//
// env: API_PORT, OUT (a directory), USER_DATA (a fresh --user-data-dir),
//      CASES: "serial:user:password:expect" separated by spaces, expect being
//      "play" or "404".
import { chromium } from 'playwright-core';

const port = process.env.API_PORT;
const out = process.env.OUT;
const cases = process.env.CASES.trim().split(/\s+/).map((c) => {
  const [serial, user, password, expect] = c.split(':');
  return { serial, user, password: password.replaceAll('+', ' '), expect };
});

const context = await chromium.launchPersistentContext(process.env.USER_DATA, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  ignoreHTTPSErrors: true, // (the API's certificate is self-signed; curl checks it elsewhere)
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
});
let failed = false;
// Poll the page (the page's CSP forbids eval, which waitForFunction needs).
async function until(page, fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await page.evaluate(fn)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}
const fail = (msg) => { console.log('FAIL: ' + msg); failed = true; };

for (const c of cases) {
  const page = await context.newPage();
  const whep = [];
  page.on('response', (r) => { if (r.url().endsWith('/whep')) whep.push(r.status()); });
  page.on('request', (r) => { if (r.url().endsWith('/whep') && process.env.SHOW_OFFER) console.log(r.postData()); });
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${c.serial}] console: ${m.text()}`); });
  await page.goto(`https://127.0.0.1:${port}/live/${c.serial}`);
  await page.fill('#username', c.user);
  await page.fill('#password', c.password);
  const t0 = Date.now();
  await page.click('button[type=submit]');
  if (c.expect === 'play') {
    if (!await until(page, () => window.custosLive.frames >= 10, 10000))
      fail(`${c.serial}: no frames (${JSON.stringify(await page.evaluate(() => window.custosLive))})`);
    const ms = Date.now() - t0;
    const frames = await page.evaluate(() => window.custosLive.frames);
    const first = await page.evaluate(() => window.custosLive.firstFrameAt - window.custosLive.offerAt);
    const size = await page.evaluate(() => [document.getElementById('video').videoWidth,
      document.getElementById('video').videoHeight]);
    console.log(`${c.serial}: the first frame ${Math.round(first)} ms after the WHEP offer; ${frames} frames ${ms} ms after signing in; ${size[0]}x${size[1]}; WHEP ${whep.join(',')}`);
    if (!(first > 0 && first <= 2000)) fail(`${c.serial}: the first frame ${first} ms after the offer (more than 2 s)`);
    if (!whep.includes(201)) fail(`${c.serial}: WHEP answered ${whep.join(',')}`);
  } else {
    await until(page, () => window.custosLive.state === 'error', 10000);
    const s = await page.evaluate(() => window.custosLive);
    console.log(`${c.serial} as ${c.user}: state ${s.state}, WHEP ${whep.join(',')}, "${s.error}"`);
    if (!whep.includes(404) || whep.includes(201)) fail(`${c.serial} as ${c.user}: WHEP answered ${whep.join(',')}`);
    if (await page.evaluate(() => window.custosLive.frames) > 1) fail(`${c.serial} as ${c.user}: frames shown`);
  }
  await page.screenshot({ path: `${out}/live-${c.serial}-${c.user}.png`, fullPage: true });
  await page.close(); // (pagehide: the page DELETEs its session)
}
await context.close();
process.exit(failed ? 1 : 0);
