// The shopping page: send the photo to POST /api/recommend, show the garments, then the products of the
// one picked. Plain DOM, no build step; every value from the server is set as text, never as HTML.
"use strict";

const K = 12;
const PRICE_PROBLEM = "Enter a maximum price of 0 or more US dollars, or leave it empty for any price.";
const state = {
  file: null,
  previewUrl: null,
  answer: null,
  picked: 0,
  stream: null,
  pending: null,
  demoShop: null, // {url, served_at} from /healthz when this app serves the demo shop's pages
};
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text || "";
  status.classList.toggle("error", isError);
}

function money(amount, currency) {
  if (amount === null || amount === undefined) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency || ""}`.trim(); // an unknown currency code
  }
}

function priceText(product) {
  if (product.price === null || product.price === undefined) return "Price on the shop's page";
  const original = money(product.price, product.currency);
  if (product.currency === "USD" || product.price_usd === null || product.price_usd === undefined) {
    return original;
  }
  return `${original} (≈ ${money(product.price_usd, "USD")})`;
}

function similarityText(score) {
  // The score is a cosine similarity (1 = the same picture, 0 or below = nothing in common); a shopper reads
  // it as a percentage, and "below zero" means no more than "nothing alike".
  const percent = Math.round(100 * Math.min(Math.max(score, 0), 1));
  return `${percent}% similar`;
}

function shopLink(url) {
  // The catalog records the demo shop's pages under its public address (FASHION_DEMO_SHOP_URL); this app
  // serves the same pages itself, so they open here whatever host and port the app runs on.
  const shop = state.demoShop;
  if (url && shop && url.startsWith(`${shop.url}/`)) return shop.served_at + url.slice(shop.url.length + 1);
  return url;
}

function isWebUrl(url) {
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:";
  } catch {
    return false;
  }
}

function productCard(product) {
  const card = $("product-template").content.firstElementChild.cloneNode(true);
  card.dataset.productId = product.product_id;
  const image = card.querySelector(".product-image");
  image.alt = product.name;
  // The downloaded copy first; the shop's own image if we have none.
  image.src = `/images/${encodeURIComponent(product.product_id)}`;
  const shopImage = shopLink(product.image_url);
  image.addEventListener("error", () => {
    if (shopImage && isWebUrl(shopImage) && image.getAttribute("src") !== shopImage) {
      image.src = shopImage;
    } else {
      image.classList.add("missing");
    }
  });
  card.querySelector(".product-name").textContent = product.name;
  card.querySelector(".product-price").textContent = priceText(product);
  card.querySelector(".product-site").textContent = product.site;
  card.querySelector(".product-similarity").textContent = similarityText(product.score);
  // The server's words (lib/retrieval/query.py `explain`): the category searched and how it was decided.
  card.querySelector(".product-why").textContent = product.why ? `Why: ${product.why}` : "";
  const link = card.querySelector(".product-link");
  const url = shopLink(product.url);
  if (isWebUrl(url)) {
    link.href = url;
    link.textContent = `View at ${product.site}`;
  } else {
    link.remove();
  }
  return card;
}

function showProducts() {
  const grid = $("product-grid");
  grid.replaceChildren();
  const garment = state.answer && state.answer.detections[state.picked];
  if (!garment) {
    $("results").hidden = true;
    return;
  }
  $("results").hidden = false;
  $("results-title").textContent = `Products like the ${garment.category}`;
  const filtered = ["max_price", "site"].some((name) => $("filters").elements[name].value.trim());
  $("results-empty").textContent = filtered
    ? "No product matches these filters; try a higher price or another shop."
    : "No products in this category yet.";
  $("results-empty").hidden = garment.recommendations.length > 0;
  for (const product of garment.recommendations) grid.append(productCard(product));
}

function pick(index) {
  state.picked = index;
  document.querySelectorAll(".garment").forEach((button, i) => {
    button.setAttribute("aria-pressed", String(i === index));
  });
  document.querySelectorAll(".box").forEach((box, i) => box.classList.toggle("picked", i === index));
  showProducts();
}

function showBoxes(answer) {
  // Boxes are in the pixels of the upright photo; the browser also shows it upright (EXIF honoured).
  const boxes = $("boxes");
  boxes.replaceChildren();
  const { width, height } = answer.image;
  if (!width || !height) return;
  answer.detections.forEach((garment, index) => {
    const [x1, y1, x2, y2] = garment.box;
    const box = document.createElement("button");
    box.type = "button";
    box.className = "box";
    box.title = garment.category;
    box.setAttribute("aria-label", `Pick the ${garment.category}`);
    Object.assign(box.style, {
      left: `${(100 * x1) / width}%`,
      top: `${(100 * y1) / height}%`,
      width: `${(100 * (x2 - x1)) / width}%`,
      height: `${(100 * (y2 - y1)) / height}%`,
    });
    box.addEventListener("click", () => pick(index));
    boxes.append(box);
  });
}

function showAnswer(answer) {
  state.answer = answer;
  const list = $("garment-list");
  list.replaceChildren();
  answer.detections.forEach((garment, index) => {
    const button = $("garment-template").content.firstElementChild.cloneNode(true);
    const crop = button.querySelector(".garment-crop");
    if (garment.crop) crop.src = garment.crop;
    crop.alt = `The ${garment.category} in your photo`;
    button.querySelector(".garment-category").textContent = garment.category;
    // The detector's confidence is for the category it chose: once the shopper picks another one, or the
    // classifier's reading of the crop replaced it, showing it would claim a certainty nobody has about the
    // category shown; the classifier's own probability is what is known then.
    let note = `${Math.round(garment.score * 100)}% sure`;
    if (garment.score <= 0) note = "whole photo";
    else if (chosenCategory()) note = `searched as ${garment.category}`;
    else if (garment.searched_as === "classified" && garment.classifier_probability !== null) {
      // As the server says it (query.said_probability): a softmax of 0.9996 is no certainty.
      const probability = garment.classifier_probability;
      note = `classifier ${probability >= 0.995 ? "over 99" : Math.round(probability * 100)}% sure`;
    }
    button.querySelector(".garment-score").textContent = note;
    const detectorSaid = garment.detected_category;
    if (detectorSaid && detectorSaid !== garment.category && garment.searched_as === "classified") {
      button.title = `The detector said ${detectorSaid}; the classifier says ${garment.category}.`;
    }
    button.dataset.category = garment.category;
    button.addEventListener("click", () => pick(index));
    list.append(button);
  });
  $("garments").hidden = answer.detections.length === 0;
  showBoxes(answer);
  // With detected garments the server's message can only say that no product matched, which the results
  // section already says for the garment shown; said once is enough.
  const detected = answer.detections.some((garment) => garment.score > 0);
  setStatus(detected ? "" : answer.message || "");
  pick(Math.min(state.picked, Math.max(answer.detections.length - 1, 0)));
}

function chosenCategory() {
  return $("filters").elements.category.value;
}

function filtersProblem() {
  // The browser knows the field's limits (min 0, a number): say what is wrong before asking the server.
  const price = $("max-price");
  price.setAttribute("aria-invalid", String(!price.validity.valid));
  return price.validity.valid ? null : PRICE_PROBLEM;
}

async function search() {
  const problem = filtersProblem();
  if (problem) {
    if (state.pending) state.pending.abort();
    setStatus(problem, true);
    return;
  }
  if (!state.file) {
    if ($("status").textContent === PRICE_PROBLEM) setStatus(""); // corrected; nothing to search yet
    return;
  }
  if (state.pending) state.pending.abort(); // a newer photo or filter replaces the running search
  const controller = new AbortController();
  state.pending = controller;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo.jpg");
  form.append("k", String(K));
  form.append("crops", "true");
  for (const name of ["max_price", "site", "category"]) {
    const value = $("filters").elements[name].value.trim();
    if (value) form.append(name, value);
  }
  setStatus("Looking for garments…");
  document.body.classList.add("busy");
  try {
    const response = await fetch("/api/recommend", { method: "POST", body: form, signal: controller.signal });
    const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (!response.ok) {
      state.answer = null;
      $("garments").hidden = true;
      $("results").hidden = true;
      $("boxes").replaceChildren();
      setStatus(body.error || `the server answered ${response.status}`, true);
      return;
    }
    showAnswer(body);
  } catch (error) {
    if (error.name !== "AbortError") setStatus(`Could not reach the server: ${error.message}`, true);
  } finally {
    if (state.pending === controller) {
      state.pending = null;
      document.body.classList.remove("busy");
    }
  }
}

function usePhoto(file) {
  state.file = file;
  state.picked = 0;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  $("preview-image").src = state.previewUrl;
  $("preview").hidden = false;
  search();
}

async function openCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch (error) {
    setStatus(`The webcam is not available: ${error.message}`, true);
    return;
  }
  $("camera-video").srcObject = state.stream;
  $("camera").hidden = false;
}

function closeCamera() {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $("camera").hidden = true;
}

function shoot() {
  const video = $("camera-video");
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob(
    (blob) => {
      if (!blob) return;
      closeCamera();
      usePhoto(new File([blob], "webcam.jpg", { type: "image/jpeg" }));
    },
    "image/jpeg",
    0.92,
  );
}

async function loadOptions() {
  // The shops and categories the catalog has, so the filters offer only values the API accepts.
  try {
    const response = await fetch("/healthz");
    const health = await response.json();
    state.demoShop = health.demo_shop || null;
    for (const [id, values] of [["site", health.sites], ["category", health.categories]]) {
      const select = $(id);
      for (const value of values || []) select.append(new Option(value, value));
    }
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus(`Could not reach the server: ${error.message}`, true);
  }
}

function init() {
  $("photo").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) usePhoto(file);
  });
  $("filters").addEventListener("change", () => search());
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    $("camera-open").hidden = false; // secure contexts only: https or 127.0.0.1/localhost
    $("camera-open").addEventListener("click", openCamera);
    $("camera-close").addEventListener("click", closeCamera);
    $("camera-shoot").addEventListener("click", shoot);
  }
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) usePhoto(file);
  });
  loadOptions();
}

init();
