// zfnet report: keyboard navigation between feature maps (and sections), pages, and the help box.
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll(".navitem"));
  var chips = Object.create(null);  // no prototype: "#__proto__" or "#constructor" finds no chip
  Array.prototype.forEach.call(document.querySelectorAll(".mapbar .chip"), function (chip) {
    chips[fragment(chip.hash)] = chip;
  });

  // The id a fragment names. A malformed one ("#%E0%A4%A") makes decodeURIComponent throw; it names
  // nothing then, rather than stopping the script.
  function fragment(hash) {
    try {
      return decodeURIComponent(hash.slice(1));
    } catch (e) {
      return "";
    }
  }

  function offset() {
    var bar = document.querySelector(".topbar");
    var maps = document.querySelector(".mapbar");
    return (bar ? bar.offsetHeight : 0) + (maps ? maps.offsetHeight : 0) + 8;
  }

  // The item the reader is at: the one in the address if it is on screen, else the last one scrolled past.
  function current() {
    var target = document.getElementById(fragment(location.hash));
    var i = items.indexOf(target);
    if (i >= 0) {
      var r = target.getBoundingClientRect();
      if (r.bottom > offset() && r.top < window.innerHeight) return i;
    }
    var at = -1;
    for (var j = 0; j < items.length; j++) {
      if (items[j].getBoundingClientRect().top <= offset() + 4) at = j; else break;
    }
    return at;
  }

  function go(i) {
    if (i < 0 || i >= items.length) return;
    location.hash = items[i].id;
    items[i].focus({ preventScroll: true });
    mark();  // at once: the hashchange event comes later
  }

  function mark() {
    Object.keys(chips).forEach(function (id) { chips[id].classList.remove("on"); });
    var chip = chips[fragment(location.hash)];
    if (chip) {
      chip.classList.add("on");
      if (chip.scrollIntoView && chip.parentNode.scrollWidth > chip.parentNode.clientWidth) {
        chip.scrollIntoView({ block: "nearest", inline: "nearest" });
      }
    }
  }

  function follow(rel) {
    var link = document.querySelector('link[rel="' + rel + '"]');
    if (link) location.href = link.getAttribute("href");
  }

  var help = document.getElementById("keys");
  function toggleHelp(show) {
    if (help) help.hidden = show === undefined ? !help.hidden : !show;
  }
  Array.prototype.forEach.call(document.querySelectorAll("[data-keys-toggle]"), function (b) {
    b.addEventListener("click", function () { toggleHelp(); });
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    switch (e.key) {
      case "j": case "ArrowRight": go(current() + 1); break;
      case "k": case "ArrowLeft": go(Math.max(current() - 1, 0)); break;
      case "]": follow("next"); break;
      case "[": follow("prev"); break;
      case "h": location.href = "index.html"; break;
      case "?": toggleHelp(); break;
      case "Escape": toggleHelp(false); break;
      default: return;
    }
    e.preventDefault();
  });
  window.addEventListener("hashchange", mark);
  mark();
})();
