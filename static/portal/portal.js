// The portal's own behaviour, outside the pages: their Content-Security-Policy runs no inline code.

// A control marked data-submit-on-change submits its form when it changes (its form also has a
// submit button, for browsers without scripts).
document.addEventListener("change", (event) => {
  const control = event.target.closest("[data-submit-on-change]");
  if (control && control.form) {
    control.form.submit();
  }
});
