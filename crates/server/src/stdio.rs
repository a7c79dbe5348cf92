//! MCP over a byte stream of newline-delimited JSON-RPC (what `precedent mcp` reads from stdin
//! and writes to stdout), with the framing errors JSON-RPC defines answered here.
//!
//! rmcp's codec drops a line it cannot decode without a word, so each line is checked before it
//! reaches rmcp: invalid UTF-8, invalid JSON or two values on one line get `-32700 Parse error`,
//! a JSON value that is not a request object gets `-32600 Invalid Request`, and a request whose
//! `params` (or the `arguments` of `tools/call`) is not an object gets `-32602 Invalid params`,
//! each with the request's id when it has one. Everything else goes to rmcp untouched. One task
//! owns the output, so replies from both sides are never interleaved within a line.

use rmcp::ServiceExt as _;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::mcp::McpServer;
use crate::state::AppState;

/// JSON-RPC error codes answered by the framing layer.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

/// Client requests of MCP (others are rmcp's "custom" requests).
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "tools/call",
    "tools/list",
];

/// Serves MCP on `input`/`output` until `input` ends or the session closes.
pub async fn serve_lines<R, W>(state: AppState, input: R, output: W) -> crate::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max_line = state.options().body_limit;
    let (rmcp_side, ours) = tokio::io::duplex(256 * 1024);
    let (from_rmcp, mut to_rmcp) = tokio::io::split(ours);
    let (lines, mut outgoing) = mpsc::channel::<Vec<u8>>(64);

    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(line) = outgoing.recv().await {
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });

    let replies = lines.clone();
    let forward_out = tokio::spawn(async move {
        let mut from_rmcp = BufReader::new(from_rmcp);
        loop {
            let mut line = Vec::new();
            match from_rmcp.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if replies.send(line).await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    let forward_in = tokio::spawn(async move {
        let mut input = BufReader::new(input);
        loop {
            let line = match read_line(&mut input, max_line).await {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => break,
            };
            match check_line(&line, max_line) {
                Verdict::Skip => {}
                Verdict::Forward => {
                    let mut framed = line;
                    framed.push(b'\n');
                    if to_rmcp.write_all(&framed).await.is_err() {
                        break;
                    }
                }
                Verdict::Reply(reply) => {
                    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
                    bytes.push(b'\n');
                    if lines.send(bytes).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_rmcp.shutdown().await;
    });

    let running = McpServer::new(state)
        .serve(rmcp_side)
        .await
        .map_err(|e| Error::Mcp(e.to_string()));
    let result = match running {
        Ok(running) => running
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| Error::Mcp(e.to_string())),
        Err(err) => Err(err),
    };
    forward_in.abort();
    let _ = forward_out.await;
    let _ = writer.await;
    result
}

/// One line without its terminator (`\n` or `\r\n`); a line longer than `max` is returned cut
/// to `max + 1` bytes (and the rest of it discarded), so that it is refused. `None` at the end.
async fn read_line<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty() || too_long).then_some(line));
        }
        let (chunk, done) = match memchr(b'\n', buf) {
            Some(at) => (&buf[..at], at + 1),
            None => (buf, buf.len()),
        };
        if !too_long {
            let room = (max + 1).saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            too_long = line.len() > max;
        }
        let ended = done <= buf.len() && buf.get(done - 1) == Some(&b'\n');
        input.consume(done);
        if ended {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Skip,
    Forward,
    Reply(Value),
}

fn error_reply(id: Value, code: i64, message: &str) -> Verdict {
    Verdict::Reply(json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    }))
}

/// What to do with one input line.
fn check_line(line: &[u8], max: usize) -> Verdict {
    if line.len() > max {
        return error_reply(
            Value::Null,
            PARSE_ERROR,
            &format!("Parse error: message longer than {max} bytes"),
        );
    }
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    let Ok(text) = std::str::from_utf8(line) else {
        return error_reply(Value::Null, PARSE_ERROR, "Parse error: invalid UTF-8");
    };
    if text.trim().is_empty() {
        return Verdict::Skip;
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            // Also catches two values on one line ("trailing characters").
            return error_reply(Value::Null, PARSE_ERROR, &format!("Parse error: {err}"));
        }
    };
    let Value::Object(message) = &value else {
        return error_reply(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: expected one JSON-RPC message object per line",
        );
    };
    let id = match message.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        Some(Value::Null) | None => Value::Null,
        Some(_) => {
            return error_reply(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: id must be a string or a number",
            );
        }
    };
    let Some(method) = message.get("method") else {
        // A response from the client: rmcp matches it to its request, or drops it.
        return Verdict::Forward;
    };
    if !method.is_string() {
        return error_reply(
            id,
            INVALID_REQUEST,
            "Invalid Request: method must be a string",
        );
    }
    match message.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(params)) => {
            if method == "tools/call"
                && params
                    .get("arguments")
                    .is_some_and(|a| !a.is_object() && !a.is_null())
            {
                return error_reply(
                    id,
                    INVALID_PARAMS,
                    "Invalid params: tool arguments must be a JSON object",
                );
            }
        }
        Some(_) => {
            return error_reply(
                id,
                INVALID_PARAMS,
                "Invalid params: params must be an object",
            );
        }
    }
    // rmcp would drop a message it cannot decode without a word (or end the session).
    match serde_json::from_value::<ClientJsonRpcMessage>(value.clone()) {
        // A known method whose params do not fit falls through to rmcp's catch-all request,
        // which would answer "method not found".
        Ok(ClientJsonRpcMessage::Request(request))
            if matches!(request.request, ClientRequest::CustomRequest(_))
                && method.as_str().is_some_and(|m| MCP_METHODS.contains(&m)) =>
        {
            error_reply(
                id,
                INVALID_PARAMS,
                "Invalid params: they do not match the method",
            )
        }
        Ok(_) => Verdict::Forward,
        // A notification gets no reply, even an error.
        Err(_) if !message.contains_key("id") => Verdict::Skip,
        Err(err) => error_reply(id, INVALID_PARAMS, &format!("Invalid params: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &[u8], expected: Option<(i64, Value)>) {
        let verdict = check_line(line, 1024);
        match expected {
            None => assert_eq!(
                verdict,
                Verdict::Forward,
                "{}",
                String::from_utf8_lossy(line)
            ),
            Some((code, id)) => {
                let Verdict::Reply(reply) = verdict else {
                    panic!("{verdict:?} for {}", String::from_utf8_lossy(line));
                };
                assert_eq!(reply["error"]["code"], code, "{reply}");
                assert_eq!(reply["id"], id, "{reply}");
            }
        }
    }

    #[test]
    fn framing_errors_get_json_rpc_replies() {
        check(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, None);
        check(
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_facets","arguments":{}}}"#,
            None,
        );
        check(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            None,
        );
        check(b"{not json", Some((PARSE_ERROR, Value::Null)));
        check(b"\xff\xfe{}", Some((PARSE_ERROR, Value::Null)));
        check(
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            Some((PARSE_ERROR, Value::Null)),
        );
        check(b"42", Some((INVALID_REQUEST, Value::Null)));
        check(
            br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            Some((INVALID_REQUEST, Value::Null)),
        );
        check(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":"s"}}"#,
            Some((INVALID_PARAMS, json!(7))),
        );
        check(
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
            Some((INVALID_PARAMS, json!("a"))),
        );
        check(
            br#"{"jsonrpc":"2.0","id":8,"method":"tools/list","params":[1]}"#,
            Some((INVALID_PARAMS, json!(8))),
        );
        check(
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":5}}"#,
            Some((INVALID_PARAMS, json!(9))),
        );
        check(
            br#"{"jsonrpc":"2.0","id":10,"method":"vendor/thing","params":{}}"#,
            None,
        );
        check(
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
            None,
        );
        check(&[b'x'; 1025], Some((PARSE_ERROR, Value::Null)));
        assert_eq!(check_line(b"  ", 1024), Verdict::Skip);
    }
}
