// The service's REST API as the dashboard calls it: the protocol header on every
// request, the CSRF header on every write (with the cookie login a cross-site form
// cannot send it), errors as the API's JSON {kind, error, pointer?}.
export const PROTOCOL = "1";
const HEADERS = { "Shoal-Protocol": PROTOCOL, "Accept": "application/json" };

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
  // The CLI's text: "error" then the caret lines when the API gave them.
  get text() {
    return this.body.pointer ? `${this.message}\n${this.body.pointer}` : this.message;
  }
}

async function answer(response) {
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") && !type.includes("ndjson")
    ? await response.json().catch(() => null)
    : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof body === "object" ? body : { error: body });
  return body;
}

export async function get(path) {
  return answer(await fetch(`/api/v1${path}`, { headers: HEADERS, credentials: "same-origin" }));
}

export async function send(method, path, body) {
  const response = await fetch(`/api/v1${path}`, {
    method,
    credentials: "same-origin",
    headers: { ...HEADERS, "Content-Type": "application/json", "X-Shoal-CSRF": "1" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answer(response);
}

export const post = (path, body) => send("POST", path, body ?? {});

// The event stream as Server-Sent Events; the browser resumes by itself with
// Last-Event-ID. onEvent(record) for each stored event, onState("open"|"retrying").
// after: the last sequence number already shown (the stream starts right after it).
export function follow(topics, after, onEvent, onState) {
  const resume = after === undefined || after === null ? "" : `&after=${after}`;
  const source = new EventSource(`/api/v1/events?protocol=${PROTOCOL}${resume}`, { withCredentials: true });
  const handle = (message) => {
    try {
      onEvent(JSON.parse(message.data));
    } catch (error) {
      console.warn("bad event", error);
    }
  };
  for (const topic of topics) source.addEventListener(topic, handle);
  source.addEventListener("message", handle);
  source.addEventListener("lost", (m) => onEvent({ topic: "lost", kind: "lost", detail: m.data }));
  source.onopen = () => onState("open");
  source.onerror = () => onState(source.readyState === EventSource.CLOSED ? "closed" : "retrying");
  return source;
}
