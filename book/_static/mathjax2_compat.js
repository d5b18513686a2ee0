// The ipywidgets HTML manager typesets widget labels with MathJax 2's API (MathJax.Hub.Queue); the
// book serves MathJax 3, which has no Hub. Whatever object becomes window.MathJax (the configuration
// object first, then MathJax 3 itself, which replaces it when it loads) gets that one entry point,
// which typesets the element once MathJax is ready.
(function () {
  var hub = {
    Queue: function (command) {
      var element = Array.isArray(command) ? command[2] : undefined;
      var mj = window.MathJax;
      var ready = (mj && mj.startup && mj.startup.promise) || Promise.resolve();
      ready.then(function () {
        if (window.MathJax && window.MathJax.typesetPromise) {
          return window.MathJax.typesetPromise(element ? [element] : undefined);
        }
      });
    },
  };
  var current = window.MathJax;
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () {
      return current;
    },
    set: function (value) {
      if (value && typeof value === "object" && !value.Hub) {
        value.Hub = hub;
      }
      current = value;
    },
  });
  window.MathJax = current || {};
})();
