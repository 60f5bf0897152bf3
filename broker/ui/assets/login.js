// login.js shows why the last login attempt failed; the form itself posts
// to /ui/login without any script.
const messages = {
  invalid: 'That token is not valid (or has been revoked).',
  empty: 'Paste an API token first.',
  form: 'The login form could not be read; reload the page and try again.',
  unavailable: 'The broker could not log you in; its log has the details.',
  expired: 'Your session has ended; log in again.',
};
const code = new URLSearchParams(location.search).get('error');
if (code) {
  const el = document.getElementById('login-error');
  el.textContent = messages[code] || 'The login failed.';
  el.hidden = false;
}
