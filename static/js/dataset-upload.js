/* Dataset upload with a progress bar. Without this script the form posts normally. */
(function () {
  "use strict";
  var form = document.querySelector("[data-upload-form]");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  var messagesNode = document.getElementById("upload-i18n");
  var text = messagesNode ? JSON.parse(messagesNode.textContent) : {};
  var box = form.querySelector("[data-upload-progress]");
  var bar = box.querySelector("progress");
  var status = box.querySelector("[data-upload-status]");
  var errorBox = form.querySelector("[data-upload-error]");
  var button = form.querySelector("button[type=submit]");
  var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10);

  function format(template, values) {
    return (template || "").replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; }).replace("%%", "%");
  }
  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }
  function clearFieldErrors() {
    form.querySelectorAll(".field-error[data-js]").forEach(function (node) { node.remove(); });
    errorBox.hidden = true;
  }
  function showFieldErrors(fields) {
    Object.keys(fields || {}).forEach(function (name) {
      var input = form.querySelector("[name='" + name + "']");
      if (!input) return;
      fields[name].forEach(function (message) {
        var p = document.createElement("p");
        p.className = "field-error";
        p.setAttribute("data-js", "");
        p.setAttribute("role", "alert");
        p.textContent = message;
        input.parentNode.appendChild(p);
      });
    });
  }

  form.addEventListener("submit", function (event) {
    var fileInput = form.querySelector("input[type=file]");
    var file = fileInput && fileInput.files && fileInput.files[0];
    event.preventDefault();
    clearFieldErrors();
    if (file && maxBytes && file.size > maxBytes) {
      showError(text.too_big);
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action") || window.location.href);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var percent = Math.floor((e.loaded / e.total) * 100);
      bar.value = percent;
      status.textContent = format(text.uploading, { percent: percent });
    });
    xhr.upload.addEventListener("load", function () {
      bar.removeAttribute("value"); // indeterminate while the server checks the photos
      status.textContent = text.checking;
    });
    xhr.addEventListener("load", function () {
      var data = xhr.response || {};
      if (xhr.status === 201 && data.url) {
        window.location.assign(data.url);
        return;
      }
      box.hidden = true;
      button.disabled = false;
      showError(data.error || format(text.failed, { status: xhr.status }));
      showFieldErrors(data.fields);
      if (data.failed_url) {
        var link = document.createElement("a");
        link.href = data.failed_url;
        link.textContent = text.failed_link;
        errorBox.appendChild(document.createTextNode(" "));
        errorBox.appendChild(link);
      }
    });
    xhr.addEventListener("error", function () {
      box.hidden = true;
      button.disabled = false;
      showError(text.network);
    });
    box.hidden = false;
    bar.value = 0;
    button.disabled = true;
    xhr.send(new FormData(form));
  });
})();
