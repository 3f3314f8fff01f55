// The page's behaviour: send a URL (JSON), a file (multipart) or a pasted image (base64 JSON) to
// /v1/classify, draw the bars. With API keys on, ask for a key on the first 401 and keep it in
// this tab's sessionStorage. Plain DOM code, no libraries: nothing is loaded from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const urlForm = $("url-form"), urlInput = $("url"), urlButton = $("url-submit");
  const drop = $("drop"), fileInput = $("file");
  const statusLine = $("status"), errorBox = $("error");
  const result = $("result"), preview = $("preview"), chart = $("chart");
  const verdict = $("verdict"), details = $("details"), untrained = $("untrained");
  const keyForm = $("key-form"), keyInput = $("key"), keyWhy = $("key-why");
  const keyForget = $("key-forget"), keyForgetItem = $("key-forget-item");
  let previewUrl = null;  // object URL of the last chosen file, revoked when replaced
  let busy = false;
  let waiting = null;  // the request a 401 or 403 stopped, sent again once a key is given

  // The API key, for this tab only: sessionStorage ends with the tab and is never sent anywhere
  // by the browser itself (unlike a cookie). Storage can be disabled: the key then lasts until
  // the page is left.
  const KEY_ITEM = "clothing-gateway-api-key";
  let memoryKey = null;
  function storedKey() {
    try { return window.sessionStorage.getItem(KEY_ITEM); } catch (_) { return memoryKey; }
  }
  function storeKey(key) {
    memoryKey = key;
    try {
      if (key === null) window.sessionStorage.removeItem(KEY_ITEM);
      else window.sessionStorage.setItem(KEY_ITEM, key);
    } catch (_) { /* memoryKey holds it */ }
    keyForgetItem.hidden = key === null;
  }

  // Words for the gateway's error codes; the server's own message follows them.
  const ERROR_WORDS = {
    bad_request: "That request could not be understood.",
    url_not_allowed: "That address cannot be fetched.",
    too_large: "The image is too large.",
    not_an_image: "That file is not an image the model can read.",
    unreadable_image: "The image is damaged or cannot be decoded.",
    image_host_failed: "The image could not be downloaded.",
    image_host_timeout: "The image's website took too long to answer.",
    overloaded: "The service is busy. Please try again in a moment.",
    model_unavailable: "The model is not available right now. Please try again shortly.",
    deadline_exceeded: "The model took too long to answer. Please try again.",
    model_error: "The model could not handle this request.",
  };

  // What a refused key means to the person at the page.
  function askForKey(status, code, sentKey) {
    if (code === "key_revoked") {
      keyWhy.textContent = "That API key has been revoked. Enter another one.";
    } else if (sentKey) {
      keyWhy.textContent = "That API key is not known to this gateway. Check it and try again.";
    } else {
      keyWhy.textContent = "This gateway answers only requests that carry an API key. Enter yours.";
    }
    storeKey(null);
    keyInput.value = "";
    keyForm.hidden = false;
    showError(code === "key_revoked" ? "The API key has been revoked." : "An API key is needed.");
    keyInput.focus();
  }

  function setBusy(on, message) {
    busy = on;
    urlButton.disabled = on;
    fileInput.disabled = on;
    statusLine.textContent = message || "";
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    result.hidden = true;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function percent(p) {
    const v = p * 100;
    return (v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1)) + "%";
  }

  function render(body) {
    const probs = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1]);
    chart.replaceChildren();
    for (const [label, p] of probs) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("aria-hidden", "true");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (p * 100).toFixed(2) + "%";
      track.appendChild(bar);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = percent(p);
      li.append(name, track, pct);
      chart.appendChild(li);
    }
    const [best, bestP] = probs[0];
    verdict.textContent = "Most likely: " + best + " (" + percent(bestP) + ")";
    const t = body.timings_ms || {};
    const model = body.model || {};
    // Only a model whose description says so: a gateway not given the description says nothing.
    untrained.hidden = model.trained !== false;
    details.textContent = "Model " + (model.name || "?") + (model.version != null ? " v" + model.version : "") +
      " · " + Math.round(t.total || 0) + " ms (model " + Math.round(t.predict || 0) + " ms)";
    result.hidden = false;
  }

  // The preview is shown with the result (a failed URL is never loaded by the page).
  async function classify(request, what, previewSrc) {
    if (busy) return;
    clearError();
    setBusy(true, "Classifying " + what + "…");
    const key = storedKey();
    const headers = Object.assign({}, request.headers || {});
    if (key) headers["X-API-Key"] = key;
    try {
      const response = await fetch("/v1/classify?top_k=3", Object.assign({}, request, { headers: headers }));
      let body = null;
      try { body = await response.json(); } catch (_) { body = null; }
      const err = (body && body.error) || {};
      if (response.status === 401 || response.status === 403) {
        waiting = { request: request, what: what, previewSrc: previewSrc };
        setBusy(false, "");
        askForKey(response.status, err.code, key);
        return;
      }
      if (!response.ok) {
        const words = ERROR_WORDS[err.code] || "Something went wrong (HTTP " + response.status + ").";
        showError(words + (err.message ? " " + err.message.charAt(0).toUpperCase() + err.message.slice(1) + "." : ""));
        setBusy(false, "");
        return;
      }
      waiting = null;
      preview.src = previewSrc;
      render(body);
      setBusy(false, "Done.");
    } catch (e) {
      showError("The gateway could not be reached. Check your connection and try again.");
      setBusy(false, "");
    }
  }

  urlForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const url = urlInput.value.trim();
    if (!url) {
      showError("Enter the address of an image first.");
      urlInput.focus();
      return;
    }
    classify({
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url: url }),
    }, "the image at that address", url);
  });

  function sendFile(file) {
    if (!file) return;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    const form = new FormData();
    form.append("image", file, file.name);
    classify({ method: "POST", body: form }, file.name || "the file", previewUrl);
  }

  fileInput.addEventListener("change", () => sendFile(fileInput.files[0]));

  // A pasted image (a screenshot, an image copied in another tab) is read once as a data: URL,
  // which is both the preview and the request: {"b64": "data:image/png;base64,…"}.
  function sendPasted(file) {
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      const dataUrl = String(reader.result);
      classify({
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ b64: dataUrl }),
      }, "the pasted image", dataUrl);
    });
    reader.addEventListener("error", () => showError("The pasted image could not be read."));
    reader.readAsDataURL(file);
  }

  document.addEventListener("paste", (event) => {
    const items = (event.clipboardData && event.clipboardData.items) || [];
    for (const item of items) {
      if (item.kind === "file" && item.type.startsWith("image/")) {
        const file = item.getAsFile();
        if (file) {
          event.preventDefault();
          sendPasted(file);
          return;
        }
      }
    }
    // Text (an address pasted into the URL field) is left to the browser.
  });

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) {
      keyInput.focus();
      return;
    }
    storeKey(key);
    keyInput.value = "";
    keyForm.hidden = true;
    clearError();
    if (waiting) classify(waiting.request, waiting.what, waiting.previewSrc);
  });

  keyForget.addEventListener("click", () => {
    storeKey(null);
    statusLine.textContent = "The API key is forgotten.";
  });
  storeKey(storedKey());

  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) sendFile(files[0]);
  });
  // A file dropped outside the zone would make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
})();
