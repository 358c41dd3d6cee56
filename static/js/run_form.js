// New-run form: choosing an optimizer fills in the recipe's learning rates for it, unless the
// user has typed their own rates since.
(function () {
  "use strict";
  var data = document.getElementById("recipe-rates");
  var optimizer = document.getElementById("id_optimizer");
  var head = document.getElementById("id_head_lr");
  var tune = document.getElementById("id_finetune_lr");
  if (!data || !optimizer || !head || !tune) return;
  var rates = JSON.parse(data.textContent);
  var edited = false;
  [head, tune].forEach(function (input) {
    input.addEventListener("input", function () { edited = true; });
  });
  optimizer.addEventListener("change", function () {
    var pair = rates[optimizer.value];
    if (!pair || edited) return;
    head.value = pair[0];
    tune.value = pair[1];
  });
})();
