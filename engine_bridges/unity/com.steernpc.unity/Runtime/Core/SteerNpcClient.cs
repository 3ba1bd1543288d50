// SteerNpcClient: the engine-agnostic C# face of the native core. No UnityEngine here.
//
//   using (var client = new SteerNpcClient("127.0.0.1:50051", apiKey))
//   {
//       string session = client.CreateSession("brom");
//       NpcReply reply = client.Say(session, "What do you sell?");
//       reply.Delta += e => Console.Write(e.Text);
//       while (!reply.IsFinished) { client.Poll(); Thread.Sleep(16); }   // a game calls Poll() once a frame
//   }
//
// Threading: Poll() raises every event on the thread that calls it (the game thread), never on
// the native core's network thread. Blocking calls (ListCharacters, CreateSession, Steer, ...)
// wait at most the client's DefaultDeadlineMs; Say, Cancel and Poll never block.
using System;
using System.Collections.Generic;
using System.Text;

namespace SteerNpc
{
    public enum NpcEventType { None = 0, Delta = 1, Done = 2, Error = 3 }

    public enum FinishReason { Unspecified = 0, Stop = 1, Length = 2, Cancelled = 3 }

    public enum ConnectionState { Idle = 0, Connecting = 1, Ready = 2, TransientFailure = 3, Shutdown = 4 }

    /// <summary>The status codes the bridge reports (StatusCode of errors): npc_status of the C
    /// header, which names the gRPC codes. tests/test_unity_csharp.py checks that the two agree.</summary>
    public static class StatusCodes
    {
        public const int Ok = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
            AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9, Aborted = 10,
            OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14, DataLoss = 15, Unauthenticated = 16;
    }

    /// <summary>One event of a streamed reply, copied out of native memory.</summary>
    public sealed class NpcEvent
    {
        public long RequestId;
        public NpcEventType Type;
        /// <summary>Delta: the new piece. Done: the whole reply. Error: the message.</summary>
        public string Text;
        public FinishReason FinishReason;
        /// <summary>Error: the gRPC status code (5 NOT_FOUND, 14 UNAVAILABLE, 16 UNAUTHENTICATED...).</summary>
        public int StatusCode;
        /// <summary>Done: the attribute vector the server applied, "name:value,..." sorted by name.</summary>
        public string Attributes;
        public string SessionId;
        public string InteractionId;
        public int PromptTokens;
        public int CompletionTokens;
        public float ServerTimeToFirstTokenMs;
        public float ServerTotalMs;

        public Dictionary<string, int> AppliedAttributes { get { return AttributeString.Parse(Attributes); } }

        public override string ToString()
        {
            return string.Format("[{0} #{1}] {2}", Type, RequestId, Text);
        }
    }

    /// <summary>A failed blocking call. StatusCode is the gRPC status code.</summary>
    public sealed class SteerNpcException : Exception
    {
        public readonly int StatusCode;

        public SteerNpcException(int statusCode, string message) : base(message) { StatusCode = statusCode; }
    }

    public sealed class SteerNpcClientOptions
    {
        /// <summary>host:port of `steernpc serve`.</summary>
        public string Target = "127.0.0.1:50051";
        /// <summary>Sent as "authorization: Bearer KEY". Null: none.</summary>
        public string ApiKey;
        public bool UseTls;
        /// <summary>PEM roots for TLS; null with UseTls: the system roots.</summary>
        public string RootCertificatesPem;
        public int DefaultDeadlineMs = 10000;
        /// <summary>Deadline of a whole reply; 0: none.</summary>
        public int SayDeadlineMs;
        public int MaxReconnectBackoffMs = 5000;
        /// <summary>Queue calls while the server is unreachable instead of failing fast.</summary>
        public bool WaitForReady;
    }

    /// <summary>Per-reply generation settings; zero / null means the character's default.</summary>
    public sealed class SayOptions
    {
        public string Attributes;
        public int MaxNewTokens;
        public float Temperature;
        public float TopP;
        public int TopK;
        public ulong Seed;
    }

    /// <summary>The handle npc_say returns: its events, and the text so far.</summary>
    public sealed class NpcReply
    {
        private readonly SteerNpcClient _client;
        private readonly StringBuilder _text = new StringBuilder();

        internal NpcReply(SteerNpcClient client, long id, string sessionId)
        {
            _client = client;
            Id = id;
            SessionId = sessionId;
        }

        public readonly long Id;
        public readonly string SessionId;
        public event Action<NpcEvent> Delta;
        public event Action<NpcEvent> Done;
        public event Action<NpcEvent> Error;

        /// <summary>The deltas so far (the whole reply once done).</summary>
        public string Text { get { return _text.ToString(); } }
        public bool IsFinished { get; private set; }
        /// <summary>The done or error event, once finished.</summary>
        public NpcEvent Final { get; private set; }
        public int DeltaCount { get; private set; }

        /// <summary>Ask the server to stop; the reply then ends with FinishReason.Cancelled.</summary>
        public bool Cancel() { return !IsFinished && _client.Cancel(Id); }

        internal void Dispatch(NpcEvent e)
        {
            switch (e.Type)
            {
                case NpcEventType.Delta:
                    _text.Append(e.Text);
                    DeltaCount++;
                    if (Delta != null) Delta(e);
                    break;
                case NpcEventType.Done:
                    IsFinished = true;
                    Final = e;
                    if (Done != null) Done(e);
                    break;
                case NpcEventType.Error:
                    IsFinished = true;
                    Final = e;
                    if (Error != null) Error(e);
                    break;
            }
        }
    }

    public sealed class AttributeSpec
    {
        public string Name;
        public int Min;
        public int Max;
        public int Default;
        public string Description;
    }

    /// <summary>A character as the server describes it (ListCharacters).</summary>
    public sealed class NpcCharacterInfo
    {
        public string Id;
        public string Name;
        public string Role;
        public string Greeting;
        public string[] Moods = new string[0];
        public Dictionary<string, int> Attributes = new Dictionary<string, int>();
        public List<AttributeSpec> Schema = new List<AttributeSpec>();
        public Dictionary<string, string> Limits = new Dictionary<string, string>();
    }

    /// <summary>"name:value,..." strings, the attribute format of the C ABI.</summary>
    public static class AttributeString
    {
        public static string Format(IDictionary<string, int> attributes)
        {
            if (attributes == null || attributes.Count == 0) return null;
            var keys = new List<string>(attributes.Keys);
            keys.Sort(StringComparer.Ordinal);
            var sb = new StringBuilder();
            foreach (string k in keys)
            {
                if (sb.Length > 0) sb.Append(',');
                sb.Append(k).Append(':').Append(attributes[k]);
            }
            return sb.ToString();
        }

        public static Dictionary<string, int> Parse(string s)
        {
            var result = new Dictionary<string, int>();
            if (string.IsNullOrEmpty(s)) return result;
            foreach (string item in s.Split(','))
            {
                int sep = item.IndexOfAny(new[] { ':', '=' });
                int value;
                if (sep > 0 && int.TryParse(item.Substring(sep + 1).Trim(), out value))
                    result[item.Substring(0, sep).Trim()] = value;
            }
            return result;
        }
    }

    public sealed class SteerNpcClient : IDisposable
    {
        private readonly ClientHandle _handle;
        private readonly Dictionary<long, NpcReply> _replies = new Dictionary<long, NpcReply>();
        private readonly object _lock = new object();

        /// <summary>Every event, before it goes to its NpcReply.</summary>
        public event Action<NpcEvent> EventReceived;
        public event Action<NpcEvent> ReplyDelta;
        public event Action<NpcEvent> ReplyDone;
        public event Action<NpcEvent> ReplyError;

        public readonly SteerNpcClientOptions Options;

        public SteerNpcClient(string target, string apiKey = null)
            : this(new SteerNpcClientOptions { Target = target, ApiKey = apiKey }) { }

        public SteerNpcClient(SteerNpcClientOptions options)
        {
            if (options == null) throw new ArgumentNullException("options");
            Options = options;
            using (var strings = new NativeStrings())
            {
                var o = new NativeMethods.ClientOptions
                {
                    target = strings.Add(options.Target),
                    apiKey = strings.Add(options.ApiKey),
                    rootCertsPem = strings.Add(options.RootCertificatesPem),
                    useTls = options.UseTls ? 1 : 0,
                    defaultDeadlineMs = options.DefaultDeadlineMs,
                    sayDeadlineMs = options.SayDeadlineMs,
                    maxReconnectBackoffMs = options.MaxReconnectBackoffMs,
                    waitForReady = options.WaitForReady ? 1 : 0,
                };
                _handle = NativeMethods.npc_client_create(ref o);
            }
            if (_handle == null || _handle.IsInvalid) throw LastError(-StatusCodes.InvalidArgument);
        }

        public static string NativeVersion { get { return Utf8.FromPtr(NativeMethods.npc_version()); } }

        public ConnectionState State { get { return (ConnectionState)NativeMethods.npc_client_state(Handle, 0); } }

        /// <summary>Replies started and not yet finished (native side).</summary>
        public int PendingReplies { get { return NativeMethods.npc_pending(Handle); } }

        public bool IsDisposed { get { return _handle.IsClosed; } }

        /// <summary>Wait up to timeoutMs for a connection (e.g. behind a loading screen).</summary>
        public bool WaitConnected(int timeoutMs)
        {
            return NativeMethods.npc_client_wait_connected(Handle, timeoutMs) == 0;
        }

        // ---- characters and sessions (blocking) -------------------------------------------------

        public string ListCharactersJson()
        {
            return Text(NativeMethods.npc_list_characters(Handle));
        }

        public List<NpcCharacterInfo> ListCharacters()
        {
            var result = new List<NpcCharacterInfo>();
            var list = MiniJson.Parse(ListCharactersJson()) as List<object>;
            if (list == null) return result;
            foreach (object item in list)
            {
                var o = item as Dictionary<string, object>;
                if (o == null) continue;
                var c = new NpcCharacterInfo
                {
                    Id = MiniJson.Str(o, "id"), Name = MiniJson.Str(o, "name"),
                    Role = MiniJson.Str(o, "role"), Greeting = MiniJson.Str(o, "greeting"),
                };
                var moods = MiniJson.Get(o, "moods") as List<object>;
                if (moods != null) c.Moods = moods.ConvertAll(m => m as string).ToArray();
                var attrs = MiniJson.Get(o, "attributes") as Dictionary<string, object>;
                if (attrs != null) foreach (var kv in attrs) c.Attributes[kv.Key] = Convert.ToInt32(kv.Value);
                var limits = MiniJson.Get(o, "limits") as Dictionary<string, object>;
                if (limits != null) foreach (var kv in limits) c.Limits[kv.Key] = kv.Value as string;
                var schema = MiniJson.Get(o, "schema") as List<object>;
                if (schema != null)
                    foreach (object s in schema)
                    {
                        var so = s as Dictionary<string, object>;
                        if (so == null) continue;
                        c.Schema.Add(new AttributeSpec
                        {
                            Name = MiniJson.Str(so, "name"), Min = MiniJson.Int(so, "min"), Max = MiniJson.Int(so, "max"),
                            Default = MiniJson.Int(so, "default_value"), Description = MiniJson.Str(so, "description"),
                        });
                    }
                result.Add(c);
            }
            return result;
        }

        /// <summary>Start a conversation with a character; returns the session id.</summary>
        public string CreateSession(string characterId, string mood = null, string attributes = null,
                                    string playerName = null, string sessionId = null)
        {
            var handle = Handle;
            using (var strings = new NativeStrings())
            {
                var o = new NativeMethods.SessionOptions
                {
                    characterId = strings.Add(characterId), sessionId = strings.Add(sessionId),
                    mood = strings.Add(mood), attributes = strings.Add(attributes), playerName = strings.Add(playerName),
                };
                return Text(NativeMethods.npc_session_create_ex(handle, ref o));
            }
        }

        /// <summary>The session as JSON (session_id, character_id, mood, attributes, turns).</summary>
        public string GetSessionJson(string sessionId)
        {
            return Text(NativeMethods.npc_session_get(Handle, Utf8.Z(sessionId)));
        }

        public void DeleteSession(string sessionId)
        {
            Check(NativeMethods.npc_session_delete(Handle, Utf8.Z(sessionId)));
        }

        /// <summary>Change mood and/or attributes for the rest of the session. clear: drop earlier steering first.</summary>
        public void Steer(string sessionId, string mood, string attributes = null, bool clear = false)
        {
            Check(NativeMethods.npc_steer_ex(Handle, Utf8.Z(sessionId), Utf8.Z(mood), Utf8.Z(attributes), clear ? 1 : 0));
        }

        public void Steer(string sessionId, string mood, IDictionary<string, int> attributes, bool clear = false)
        {
            Steer(sessionId, mood, AttributeString.Format(attributes), clear);
        }

        /// <summary>A save-game snapshot of the session (msgpack bytes).</summary>
        public byte[] ExportSession(string sessionId)
        {
            return Bytes(NativeMethods.npc_session_export(Handle, Utf8.Z(sessionId)));
        }

        /// <summary>Restore a snapshot; returns its session id.</summary>
        public string ImportSession(byte[] snapshot)
        {
            if (snapshot == null) throw new ArgumentNullException("snapshot");
            return Text(NativeMethods.npc_session_import(Handle, snapshot, (UIntPtr)snapshot.Length));
        }

        // ---- replies (non-blocking) ------------------------------------------------------------

        /// <summary>Start a streamed reply. attributeOverrides ("humor:4,verbosity:1") apply to this reply only.</summary>
        public NpcReply Say(string sessionId, string text, string attributeOverrides = null)
        {
            return Say(sessionId, text, new SayOptions { Attributes = attributeOverrides });
        }

        public NpcReply Say(string sessionId, string text, SayOptions options)
        {
            if (options == null) options = new SayOptions();
            var handle = Handle;
            long id;
            using (var strings = new NativeStrings())
            {
                var o = new NativeMethods.SayOptions
                {
                    attributes = strings.Add(options.Attributes), maxNewTokens = options.MaxNewTokens,
                    temperature = options.Temperature, topP = options.TopP, topK = options.TopK, seed = options.Seed,
                };
                id = NativeMethods.npc_say_ex(handle, Utf8.Z(sessionId), Utf8.Z(text), ref o);
            }
            if (id <= 0) throw LastError((int)id);
            var reply = new NpcReply(this, id, sessionId);
            lock (_lock) _replies[id] = reply;
            return reply;
        }

        /// <summary>Ask the server to stop a reply; false if it is unknown or already finished.</summary>
        public bool Cancel(long requestId)
        {
            return NativeMethods.npc_cancel(Handle, requestId) == 0;
        }

        /// <summary>Take up to maxEvents queued events and raise them (on this thread). Never blocks.
        /// Returns how many were raised.</summary>
        public int Poll(int maxEvents = int.MaxValue)
        {
            int n = 0;
            NpcEvent e;
            while (n < maxEvents && (e = Next(0)) != null)
            {
                Raise(e);
                n++;
            }
            return n;
        }

        /// <summary>Poll variant that returns the events instead of raising C# events on the client
        /// (NpcReply handles still see them).</summary>
        public List<NpcEvent> PollEvents(int maxEvents = int.MaxValue)
        {
            var list = new List<NpcEvent>();
            NpcEvent e;
            while (list.Count < maxEvents && (e = Next(0)) != null)
            {
                Route(e);
                list.Add(e);
            }
            return list;
        }

        /// <summary>Wait up to timeoutMs for one event and raise it (tools and tests; games use Poll).</summary>
        public NpcEvent PollWait(int timeoutMs)
        {
            NpcEvent e = Next(timeoutMs);
            if (e != null) Raise(e);
            return e;
        }

        public void Dispose()
        {
            _handle.Dispose();  // npc_client_destroy: cancels replies in flight, joins the network thread
            lock (_lock) _replies.Clear();
        }

        // ---- internals --------------------------------------------------------------------------

        private ClientHandle Handle
        {
            get
            {
                if (_handle.IsClosed) throw new ObjectDisposedException("SteerNpcClient");
                return _handle;
            }
        }

        private NpcEvent Next(int timeoutMs)
        {
            NativeMethods.Event ev;
            int got = timeoutMs > 0 ? NativeMethods.npc_poll_wait(Handle, out ev, timeoutMs) : NativeMethods.npc_poll(Handle, out ev);
            if (got < 0) throw LastError(got);
            if (got == 0) return null;
            // Copy everything now: the native strings are only valid until the next poll on this thread.
            return new NpcEvent
            {
                RequestId = ev.requestId,
                Type = (NpcEventType)ev.type,
                Text = Utf8.FromPtr(ev.text, ev.textLen),
                FinishReason = (FinishReason)ev.finishReason,
                StatusCode = ev.statusCode,
                Attributes = Utf8.FromPtr(ev.attributes),
                SessionId = Utf8.FromPtr(ev.sessionId),
                InteractionId = Utf8.FromPtr(ev.interactionId),
                PromptTokens = ev.promptTokens,
                CompletionTokens = ev.completionTokens,
                ServerTimeToFirstTokenMs = ev.serverTtftMs,
                ServerTotalMs = ev.serverTotalMs,
            };
        }

        private void Raise(NpcEvent e)
        {
            if (EventReceived != null) EventReceived(e);
            switch (e.Type)
            {
                case NpcEventType.Delta: if (ReplyDelta != null) ReplyDelta(e); break;
                case NpcEventType.Done: if (ReplyDone != null) ReplyDone(e); break;
                case NpcEventType.Error: if (ReplyError != null) ReplyError(e); break;
            }
            Route(e);
        }

        private void Route(NpcEvent e)
        {
            NpcReply reply;
            lock (_lock)
            {
                if (!_replies.TryGetValue(e.RequestId, out reply)) return;
                if (e.Type != NpcEventType.Delta) _replies.Remove(e.RequestId);
            }
            reply.Dispatch(e);
        }

        // An npc_result: the whole answer of one call (one RPC), copied out and freed; a failure
        // throws with the result's status and message.
        private static byte[] Bytes(ResultHandle result)
        {
            using (result)
            {
                int status = result.Status;
                byte[] bytes = result.Bytes();
                if (status == StatusCodes.Ok) return bytes;
                string message = Encoding.UTF8.GetString(bytes);
                throw new SteerNpcException(status, string.IsNullOrEmpty(message) ? "steernpc error " + status : message);
            }
        }

        private static string Text(ResultHandle result)
        {
            return Encoding.UTF8.GetString(Bytes(result));
        }

        private static void Check(int result)
        {
            if (result < 0) throw LastError(result);
        }

        private static SteerNpcException LastError(int result)
        {
            int code = NativeMethods.npc_last_error_code();
            if (code == 0) code = result < 0 ? -result : StatusCodes.Internal;
            string message = Utf8.FromPtr(NativeMethods.npc_last_error());
            return new SteerNpcException(code, string.IsNullOrEmpty(message) ? "steernpc error " + code : message);
        }
    }
}
