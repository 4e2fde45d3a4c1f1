// The live page (docs/live.md): sign in with the API's session, then play
// /api/v1/live/{serial} over WHEP (RFC 9725) in the <video>; on failure,
// try again. No external assets; served by ingestd under a strict CSP.
'use strict';

const serial = decodeURIComponent(location.pathname.split('/')[2] || '');
const $ = (id) => document.getElementById(id);
const video = $('video');
let session = null; // the WHEP session's URL, to DELETE it
let pc = null;
let retryTimer = null;

// Frames decoded, for people (the info line) and for tests.
window.custosLive = { frames: 0, state: 'starting', error: '', offerAt: 0, firstFrameAt: 0 };
function countFrames() {
  if (!window.custosLive.frames++) window.custosLive.firstFrameAt = performance.now();
  video.requestVideoFrameCallback(countFrames);
}
video.requestVideoFrameCallback(countFrames);

function setState(state, text) {
  window.custosLive.state = state;
  const el = $('state');
  el.textContent = text || state;
  el.className = 'state ' + state;
}

function token() { return sessionStorage.getItem('custos.token'); }

function showLogin(message) {
  setState('signed-out', 'signed out');
  $('login').hidden = false;
  $('login-error').textContent = message || '';
}

$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { username: $('username').value, password: $('password').value };
  if ($('totp').value) body.totp = $('totp').value;
  const res = await fetch('/api/v1/session', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await res.json().catch(() => ({}));
  if (res.status !== 201 && res.status !== 200) {
    $('login-error').textContent = j.message || ('sign-in failed (' + res.status + ')');
    return;
  }
  sessionStorage.setItem('custos.token', j.token);
  $('password').value = '';
  $('login').hidden = true;
  start();
});

// A page opened on this machine (loopback) offers only loopback candidates.
function loopbackOnly(sdp) {
  const h = location.hostname;
  if (h !== '127.0.0.1' && h !== '[::1]' && h !== 'localhost') return sdp;
  return sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate:') ||
    / (127\.0\.0\.1|::1) /.test(l)).join('\r\n');
}

function gathered(peer) {
  return new Promise((resolve) => {
    if (peer.iceGatheringState === 'complete') return resolve();
    const done = () => { if (peer.iceGatheringState === 'complete') resolve(); };
    peer.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 2000); // what there is by then
  });
}

function retry(seconds) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(start, seconds * 1000);
}

async function stop() {
  if (pc) { pc.close(); pc = null; }
  if (session) {
    const url = session;
    session = null;
    fetch(url, { method: 'DELETE', keepalive: true,
                 headers: { Authorization: 'Bearer ' + token() } }).catch(() => {});
  }
}

async function start() {
  await stop();
  if (!token()) return showLogin();
  if (!window.RTCPeerConnection) {
    setState('error', 'no WebRTC');
    $('info').textContent = 'This browser cannot play live video (no WebRTC).';
    return;
  }
  setState('connecting');
  const peer = new RTCPeerConnection({ iceServers: [] });
  pc = peer;
  peer.addTransceiver('video', { direction: 'recvonly' });
  peer.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  peer.onconnectionstatechange = () => {
    if (peer !== pc) return;
    if (peer.connectionState === 'connected') setState('playing');
    if (peer.connectionState === 'failed' || peer.connectionState === 'closed') {
      setState('error', 'connection lost');
      retry(2);
    }
  };
  await peer.setLocalDescription(await peer.createOffer());
  await gathered(peer);
  window.custosLive.offerAt = performance.now();
  const res = await fetch('/api/v1/live/' + encodeURIComponent(serial) + '/whep', {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + token() },
    body: loopbackOnly(peer.localDescription.sdp),
  });
  if (res.status === 401) { sessionStorage.removeItem('custos.token'); return showLogin('Your session has ended; sign in again.'); }
  if (res.status !== 201) {
    const j = await res.json().catch(() => ({}));
    window.custosLive.error = j.message || String(res.status);
    setState('error', res.status === 404 ? 'not live' : 'refused');
    $('info').textContent = j.message || ('refused (' + res.status + ')');
    return retry(Number(res.headers.get('Retry-After')) || 5);
  }
  session = new URL(res.headers.get('Location'), location.href).href;
  await peer.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  $('info').textContent = '';
}

setInterval(() => {
  if (window.custosLive.state === 'playing')
    $('info').textContent = window.custosLive.frames + ' frames shown';
}, 1000);
window.addEventListener('pagehide', stop);
$('serial').textContent = serial;
start();
