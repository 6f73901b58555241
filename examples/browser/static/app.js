// The browser side of the example: Autobahn|JS (from npm) talking to the broker.
// It subscribes to a topic, publishes to it (and receives its own event), then calls
// the Python procedure registered by server.py. Each step is appended to the page;
// window.exampleDone resolves when all three worked (the test awaits it).
"use strict";

const params = new URLSearchParams(window.location.search);
const routerUrl = params.get("router") || `ws://${window.location.hostname}:8080/ws`;
const realm = params.get("realm") || "realm1";
const TOPIC = "com.example.browser.chat";
const PROCEDURE = "com.example.browser.shout";

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

function show(step, text) {
  const item = document.createElement("li");
  item.id = step;
  item.textContent = `${step}: ${text}`;
  document.getElementById("log").appendChild(item);
}

function describe(error) {
  // Autobahn rejects with autobahn.Error {error, args, kwargs}.
  return error && error.error ? `${error.error} ${JSON.stringify(error.args || [])}` : String(error);
}

document.getElementById("router").textContent = routerUrl;

window.exampleDone = new Promise((resolve, reject) => {
  let finished = false;
  const connection = new autobahn.Connection({ url: routerUrl, realm: realm, max_retries: 0 });

  connection.onopen = async (session) => {
    try {
      setStatus(`connected (session ${session.id})`);
      let gotEvent;
      const eventArrived = new Promise((r) => { gotEvent = r; });
      await session.subscribe(TOPIC, (args) => gotEvent(args[0]));
      show("subscribed", TOPIC);

      const text = "hello from the browser";
      await session.publish(TOPIC, [text], {}, { acknowledge: true, exclude_me: false });
      show("published", text);
      show("received", await eventArrived);

      const answer = await session.call(PROCEDURE, [text]);
      show("called", `${PROCEDURE} -> ${answer}`);

      finished = true;
      setStatus("done");
      resolve(document.getElementById("log").innerText);
      connection.close();
    } catch (error) {
      finished = true;
      setStatus(`error: ${describe(error)}`);
      reject(new Error(describe(error)));
    }
  };

  connection.onclose = (reason, details) => {
    if (!finished) {
      finished = true;
      setStatus(`closed: ${reason} ${details && details.reason ? details.reason : ""}`);
      reject(new Error(`connection closed: ${reason}`));
    }
    return true; // do not retry
  };

  setStatus("connecting");
  connection.open();
});
