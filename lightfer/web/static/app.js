// The page of `lightfer serve`: send a photo to POST /api/predict, draw the rows it returns.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#e4572e", "#2e86ab", "#76b041", "#a23b72", "#f18f01", "#3b1f2b", "#17bebb"];
let maxUpload = null;
let stream = null;
let latest = 0; // number of the latest request: older answers arriving late are ignored
let shown = null; // object URL of the photo on display

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;
const percent = (p) => `${(100 * p).toFixed(1)}%`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
  setStatus("");
}

function detailOf(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `the server answered ${response.status} ${response.statusText}`;
}

async function loadHealth() {
  try {
    const health = await (await fetch("/api/health")).json();
    maxUpload = health.max_upload_bytes;
    $("limit").textContent = megabytes(maxUpload);
    $("model").textContent =
      `model ${health.model}, ${health.image_size} px faces; classes: ${health.classes.join(", ")}`;
  } catch (err) {
    showError(`The server does not answer (${err.message}); is lightfer serve running?`);
  }
}

async function predict(blob, name) {
  const request = ++latest;
  $("error").hidden = true;
  if (maxUpload !== null && blob.size > maxUpload) {
    $("result").hidden = true;
    showError(`${name} (${megabytes(blob.size)}) is larger than the limit of ` +
      `${megabytes(maxUpload)}; lightfer serve --max-upload-mb raises it.`);
    return;
  }
  setStatus(`Looking for faces in ${name}...`);
  const form = new FormData();
  form.append("file", blob, name);
  let response;
  let body = null;
  try {
    response = await fetch("/api/predict", { method: "POST", body: form });
    body = await response.json().catch(() => null);
  } catch (err) {
    if (request === latest) showError(`The server cannot be reached: ${err.message}`);
    return;
  }
  if (request !== latest) return;
  if (response.ok) {
    setStatus("");
    show(blob, body.rows, `${name}: ${body.rows.length} face(s)`);
  } else if (response.status === 422) {
    show(blob, [], name); // the photo itself says why no face was found
    showError(detailOf(body, response));
  } else {
    $("result").hidden = true;
    showError(detailOf(body, response));
  }
}

function show(blob, rows, caption) {
  if (shown) URL.revokeObjectURL(shown);
  shown = URL.createObjectURL(blob);
  const image = $("image");
  for (const box of $("frame").querySelectorAll(".box")) box.remove();
  $("faces").replaceChildren();
  $("caption").textContent = caption;
  image.onload = () => {
    rows.forEach((row, index) => drawBox(row, index, image.naturalWidth, image.naturalHeight));
  };
  image.src = shown;
  rows.forEach((row, index) => $("faces").append(card(row, index)));
  $("result").hidden = false;
}

function drawBox(row, index, width, height) {
  const [x0, y0, x1, y1] = row.box;
  const clamp = (v) => Math.min(100, Math.max(0, v));
  const left = clamp((100 * x0) / width);
  const top = clamp((100 * y0) / height);
  const box = element("div", "box");
  box.dataset.face = String(index + 1);
  Object.assign(box.style, {
    left: `${left}%`,
    top: `${top}%`,
    width: `${clamp((100 * x1) / width) - left}%`,
    height: `${clamp((100 * y1) / height) - top}%`,
    borderColor: COLOURS[index % COLOURS.length],
  });
  const tag = element("span", "tag", `${index + 1} ${row.label}`);
  tag.style.background = COLOURS[index % COLOURS.length];
  box.append(tag);
  $("frame").append(box);
}

function card(row, index) {
  const colour = COLOURS[index % COLOURS.length];
  const node = element("article", "face");
  node.style.borderTopColor = colour;
  const title = element("h2");
  title.append(element("span", "badge", String(index + 1)), ` ${row.label}`);
  title.querySelector(".badge").style.background = colour;
  node.append(title);
  const score = row.score === null ? "central square" : `detector score ${row.score.toFixed(3)}`;
  node.append(element("p", "score", score));
  const bars = element("ul", "bars");
  for (const [name, p] of Object.entries(row.probabilities)) {
    const item = element("li", name === row.label ? "bar top" : "bar");
    item.dataset.class = name;
    item.dataset.probability = String(p);
    const track = element("span", "track");
    const fill = element("span", "fill");
    fill.style.width = `${100 * p}%`;
    if (name === row.label) fill.style.background = colour;
    track.append(fill);
    item.append(element("span", "name", name), track, element("span", "value", percent(p)));
    bars.append(item);
  }
  node.append(bars);
  return node;
}

async function toggleCamera() {
  if (stream) {
    stopCamera();
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("The browser allows the webcam only on a secure page: open this page as " +
      "http://localhost or http://127.0.0.1, or over https.");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    showError(`The webcam could not be opened: ${err.message || err.name}`);
    return;
  }
  $("video").srcObject = stream;
  $("camera-panel").hidden = false;
  $("camera").textContent = "stop the webcam";
}

function stopCamera() {
  for (const track of stream.getTracks()) track.stop();
  stream = null;
  $("video").srcObject = null;
  $("camera-panel").hidden = true;
  $("camera").textContent = "use the webcam";
}

function capture() {
  const video = $("video");
  if (!video.videoWidth) {
    showError("The webcam has not sent a picture yet; try again in a moment.");
    return;
  }
  const canvas = element("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => predict(blob, "webcam.jpg"), "image/jpeg", 0.92);
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) predict(file, file.name);
    event.target.value = ""; // choosing the same file again sends it again
  });
  // The whole window takes drops, so a photo dropped beside the zone is not opened instead.
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("over");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) predict(file, file.name);
  });
  $("camera").addEventListener("click", toggleCamera);
  $("capture").addEventListener("click", capture);
  loadHealth();
}

setUp();
