// Classify page: drag and drop, paste from the clipboard, a preview before sending, and sending
// without leaving the page. Without JavaScript the form posts normally (and redirects to the answer).
(function () {
  "use strict";
  var form = document.getElementById("classify-form");
  if (!form || !window.fetch || !window.FormData || !window.DataTransfer) return;
  var picker = document.getElementById("id_image");
  var camera = document.getElementById("id_camera");
  var zone = document.getElementById("dropzone");
  var preview = document.getElementById("preview");
  var hint = document.getElementById("dropzone-hint");
  var status = document.getElementById("classify-status");
  var result = document.getElementById("result");
  var button = document.getElementById("classify-button");
  var previewUrl = null;
  // The loading state: a spinner and a sentence in the result's place while the photo is classified.
  var loadingTemplate = document.getElementById("classify-loading");
  var loadingHtml = "";
  if (loadingTemplate) {
    loadingTemplate.hidden = false;
    loadingHtml = loadingTemplate.outerHTML;
    loadingTemplate.parentNode.removeChild(loadingTemplate);
  }

  // The camera input only where a camera exists (a phone, or a computer with a webcam).
  var cameraLabel = document.querySelector("label.camera-label");
  function showCamera(on) {
    if (camera) camera.hidden = !on;
    if (cameraLabel) cameraLabel.hidden = !on;
  }
  if (camera) {
    showCamera(false);
    if (navigator.mediaDevices && navigator.mediaDevices.enumerateDevices) {
      navigator.mediaDevices.enumerateDevices().then(function (devices) {
        showCamera(devices.some(function (d) { return d.kind === "videoinput"; }));
      }).catch(function () { showCamera(false); });
    }
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    if (!file || !/^image\//.test(file.type || "image/")) { preview.hidden = true; return; }
    previewUrl = URL.createObjectURL(file);
    // An unreadable file shows the server's error after sending, never a broken preview.
    preview.onerror = function () { preview.hidden = true; };
    preview.onload = function () { preview.hidden = false; };
    preview.hidden = true;
    preview.src = previewUrl;
    hint.textContent = file.name || hint.textContent;
  }

  function useFile(file, input) {
    // Put a dropped or pasted file into the picker so that the form sends it like a chosen one.
    var list = new DataTransfer();
    list.items.add(file);
    (input || picker).files = list.files;
    if (input !== camera && camera) camera.value = "";
    showPreview(file);
  }

  picker.addEventListener("change", function () { if (camera) camera.value = ""; showPreview(picker.files[0]); });
  if (camera) camera.addEventListener("change", function () { picker.value = ""; showPreview(camera.files[0]); });

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    var file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) useFile(file, picker);
  });
  document.addEventListener("paste", function (e) {
    var items = (e.clipboardData && e.clipboardData.items) || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].kind === "file" && /^image\//.test(items[i].type)) {
        var file = items[i].getAsFile();
        if (file) { useFile(new File([file], file.name || "pasted.png", { type: file.type }), picker); e.preventDefault(); }
        return;
      }
    }
  });

  form.addEventListener("submit", function (e) {
    if (!(picker.files.length || (camera && camera.files.length))) return; // let the server say what is missing
    e.preventDefault();
    button.disabled = true;
    form.classList.add("busy");
    status.textContent = form.dataset.sending || "…";
    result.setAttribute("aria-busy", "true");
    if (loadingHtml) result.innerHTML = loadingHtml;
    fetch(form.action, { method: "POST", body: new FormData(form), headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) { result.innerHTML = html; status.textContent = ""; bindResult(); })
      .catch(function () { form.submit(); })
      .finally(function () { button.disabled = false; form.classList.remove("busy"); result.removeAttribute("aria-busy"); });
  });

  // "Wrong breed?": sent without leaving the page; the answer replaces the form with the thanks.
  function bindFeedback() {
    var feedback = document.getElementById("feedback-form");
    if (!feedback) return;
    feedback.addEventListener("submit", function (e) {
      e.preventDefault();
      var send = feedback.querySelector("[type=submit]");
      if (send) send.disabled = true;
      fetch(feedback.action, { method: "POST", body: new FormData(feedback), headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) { result.innerHTML = html; bindResult(); })
        .catch(function () { feedback.submit(); });
    });
  }

  function bindResult() { bindHeatmaps(); bindFeedback(); }

  function bindHeatmaps() {
    var links = result.querySelectorAll("a[data-heatmap-target]");
    Array.prototype.forEach.call(links, function (link) {
      link.addEventListener("click", function (e) {
        var img = document.getElementById(link.getAttribute("data-heatmap-target"));
        if (!img) return;
        e.preventDefault();
        if (!img.src) img.src = link.href;
        img.hidden = !img.hidden;
      });
    });
  }
  bindResult();
})();
