// SteerNpcClient: the engine-agnostic C# face of the native core. No UnityEngine here.
//
//   using (var client = new SteerNpcClient("127.0.0.1:50051", apiKey))
//   {
//       string session = client.CreateSession("brom");
//       NpcReply reply = client.Say(session, "What do you sell?");
//       reply.Delta += e => Console.Write(e.Text);
//       while (!reply.IsFinished) { client.Poll(); Thread.Sleep(16); }   // a game calls Poll() once a frame
//
//       // A scene: several NPCs and the player in one conversation (each line names its speaker).
//       client.CreateScene("tavern", new[] { new NpcSceneMemberSpec("brom"), new NpcSceneMemberSpec("marta") }, "Ayla");
//       NpcSceneRequest said = client.SceneSay("tavern", "Brom, what do you think?");
//       said.Delta += e => Console.Write(e.Speaker + ": " + e.Text);
//       NpcSceneRequest banter = client.SceneContinue("tavern", 3);        // banter.Cancel() ends it
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
    /// <summary>npc_event_type. SceneEnd: a scene request (SceneSay / SceneContinue) is over.</summary>
    public enum NpcEventType { None = 0, Delta = 1, Done = 2, Error = 3, SceneEnd = 4 }

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
        /// <summary>Scene events: the scene ("" for a session reply).</summary>
        public string SceneId = "";
        /// <summary>Scene Delta / Done: the member speaking this line (its member id).</summary>
        public string SpeakerId = "";
        /// <summary>Scene Delta / Done: the name it speaks under ("Brom Ironhand").</summary>
        public string Speaker = "";
        /// <summary>Scene Delta / Done: the line's index within its request; SceneEnd: the lines it produced.</summary>
        public int Line;

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

    /// <summary>One member of a scene to create or join (npc_scene_member).</summary>
    public sealed class NpcSceneMemberSpec
    {
        public string CharacterId;
        /// <summary>Null: the character id.</summary>
        public string MemberId;
        /// <summary>Null: the character's name.</summary>
        public string Name;
        public string Mood;
        /// <summary>Member-level steer, "name:value,...".</summary>
        public string Attributes;

        public NpcSceneMemberSpec() { }

        public NpcSceneMemberSpec(string characterId, string memberId = null, string mood = null, string attributes = null)
        {
            CharacterId = characterId;
            MemberId = memberId;
            Mood = mood;
            Attributes = attributes;
        }

        /// <summary>The member id the server gives it.</summary>
        public string EffectiveMemberId { get { return string.IsNullOrEmpty(MemberId) ? CharacterId : MemberId; } }
    }

    /// <summary>A member as the server describes it (GetScene).</summary>
    public sealed class NpcSceneMemberInfo
    {
        public string MemberId;
        public string CharacterId;
        public string Name;
        public string Mood;
        public Dictionary<string, int> Attributes = new Dictionary<string, int>();
        /// <summary>Lines it has said in the scene.</summary>
        public int Lines;
    }

    /// <summary>One line of a scene: a transcript line, or a line a request streamed.</summary>
    public sealed class NpcSceneLine
    {
        /// <summary>"player" or a member id.</summary>
        public string SpeakerId;
        public string Speaker;
        public string Text;
        /// <summary>Streamed lines only: how the line ended, and the vector it was spoken under.</summary>
        public FinishReason FinishReason;
        public string Attributes;

        public override string ToString() { return Speaker + ": " + Text; }
    }

    /// <summary>A scene as the server describes it (GetScene).</summary>
    public sealed class NpcSceneInfo
    {
        public string SceneId;
        public string PlayerName;
        public List<NpcSceneMemberInfo> Members = new List<NpcSceneMemberInfo>();
        /// <summary>Lines in the transcript.</summary>
        public int Lines;
        public string LastSpeakerId;
        public ulong Seed;
        /// <summary>With includeTranscript only.</summary>
        public List<NpcSceneLine> Transcript = new List<NpcSceneLine>();
    }

    /// <summary>The handle SceneSay / SceneContinue return: each member's line as it streams
    /// (Delta, then LineDone, both naming the speaker), then Ended (or Error).</summary>
    public sealed class NpcSceneRequest
    {
        private readonly SteerNpcClient _client;
        private readonly StringBuilder _text = new StringBuilder();
        private readonly List<NpcSceneLine> _lines = new List<NpcSceneLine>();

        internal NpcSceneRequest(SteerNpcClient client, long id, string sceneId)
        {
            _client = client;
            Id = id;
            SceneId = sceneId;
        }

        public readonly long Id;
        public readonly string SceneId;
        /// <summary>A piece of the current line (e.SpeakerId, e.Speaker, e.Text).</summary>
        public event Action<NpcEvent> Delta;
        /// <summary>A member's line is done (e.Text: the whole line; e.FinishReason).</summary>
        public event Action<NpcEvent> LineDone;
        /// <summary>The request is over (e.FinishReason: Cancelled when cancelled or interrupted).</summary>
        public event Action<NpcEvent> Ended;
        public event Action<NpcEvent> Error;

        /// <summary>The lines done so far, in order.</summary>
        public IList<NpcSceneLine> Lines { get { return _lines.AsReadOnly(); } }
        /// <summary>The member speaking now ("" between lines).</summary>
        public string CurrentSpeakerId { get; private set; }
        public string CurrentSpeaker { get; private set; }
        /// <summary>The current line's text so far.</summary>
        public string CurrentText { get { return _text.ToString(); } }
        public bool IsFinished { get; private set; }
        /// <summary>The SceneEnd or Error event, once finished.</summary>
        public NpcEvent Final { get; private set; }
        public bool WasCancelled { get { return Final != null && Final.Type == NpcEventType.SceneEnd && Final.FinishReason == FinishReason.Cancelled; } }

        /// <summary>Stop at the next step: the running line ends cancelled, no other starts.</summary>
        public bool Cancel() { return !IsFinished && _client.Cancel(Id); }

        internal void Dispatch(NpcEvent e)
        {
            switch (e.Type)
            {
                case NpcEventType.Delta:
                    if (CurrentSpeakerId != e.SpeakerId) _text.Length = 0;
                    CurrentSpeakerId = e.SpeakerId;
                    CurrentSpeaker = e.Speaker;
                    _text.Append(e.Text);
                    if (Delta != null) Delta(e);
                    break;
                case NpcEventType.Done:
                    _lines.Add(new NpcSceneLine
                    {
                        SpeakerId = e.SpeakerId, Speaker = e.Speaker, Text = e.Text, FinishReason = e.FinishReason, Attributes = e.Attributes,
                    });
                    _text.Length = 0;
                    CurrentSpeakerId = "";
                    CurrentSpeaker = "";
                    if (LineDone != null) LineDone(e);
                    break;
                case NpcEventType.SceneEnd:
                    IsFinished = true;
                    Final = e;
                    if (Ended != null) Ended(e);
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
        private readonly Dictionary<long, NpcSceneRequest> _sceneRequests = new Dictionary<long, NpcSceneRequest>();
        private readonly object _lock = new object();

        /// <summary>Every event, before it goes to its NpcReply.</summary>
        public event Action<NpcEvent> EventReceived;
        public event Action<NpcEvent> ReplyDelta;
        public event Action<NpcEvent> ReplyDone;
        public event Action<NpcEvent> ReplyError;
        /// <summary>A scene request ended (NpcEventType.SceneEnd).</summary>
        public event Action<NpcEvent> SceneEnded;

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
                var o = SayStruct(options, strings);
                id = NativeMethods.npc_say_ex(handle, Utf8.Z(sessionId), Utf8.Z(text), ref o);
            }
            if (id <= 0) throw LastError((int)id);
            var reply = new NpcReply(this, id, sessionId);
            lock (_lock) _replies[id] = reply;
            return reply;
        }

        // ---- scenes -----------------------------------------------------------------------------
        // Blocking calls (CreateScene, GetScene, JoinScene, ...) wait at most DefaultDeadlineMs;
        // SceneSay and SceneContinue never block. Statuses: an unknown scene or member is NotFound,
        // a scene without members (banter: fewer than two) FailedPrecondition, a bad vector
        // InvalidArgument naming the member and field.

        /// <summary>Create a scene; returns its id (sceneId null: the server picks one). context:
        /// game context every member sees; seed: the speaking policy's tie-break (0: random).</summary>
        public string CreateScene(string sceneId, IList<NpcSceneMemberSpec> members, string playerName = null,
                                  IDictionary<string, string> context = null, ulong seed = 0)
        {
            var handle = Handle;
            using (var strings = new NativeStrings())
            {
                int count = members == null ? 0 : members.Count;
                var specs = new NativeMethods.SceneMember[count];
                for (int i = 0; i < count; i++) specs[i] = MemberStruct(members[i], strings);
                var o = new NativeMethods.SceneOptions
                {
                    sceneId = strings.Add(sceneId), playerName = strings.Add(playerName), context = strings.Add(ContextString(context)),
                    seed = seed, members = strings.AddArray(specs), memberCount = count,
                };
                return Text(NativeMethods.npc_scene_create(handle, ref o));
            }
        }

        /// <summary>The scene as JSON (steernpc.v1.Scene with proto field names).</summary>
        public string GetSceneJson(string sceneId, bool includeTranscript = false)
        {
            return Text(NativeMethods.npc_scene_get(Handle, Utf8.Z(sceneId), includeTranscript ? 1 : 0));
        }

        public NpcSceneInfo GetScene(string sceneId, bool includeTranscript = false)
        {
            var o = MiniJson.Parse(GetSceneJson(sceneId, includeTranscript)) as Dictionary<string, object>;
            var info = new NpcSceneInfo();
            if (o == null) return info;
            info.SceneId = MiniJson.Str(o, "scene_id");
            info.PlayerName = MiniJson.Str(o, "player_name");
            info.Lines = MiniJson.Int(o, "lines");
            info.LastSpeakerId = MiniJson.Str(o, "last_speaker_id");
            ulong seed;
            object rawSeed = MiniJson.Get(o, "seed");  // uint64 travels as a JSON string
            if (rawSeed != null && ulong.TryParse(Convert.ToString(rawSeed, System.Globalization.CultureInfo.InvariantCulture), out seed)) info.Seed = seed;
            var members = MiniJson.Get(o, "members") as List<object>;
            if (members != null)
                foreach (object item in members)
                {
                    var m = item as Dictionary<string, object>;
                    if (m == null) continue;
                    var member = new NpcSceneMemberInfo
                    {
                        MemberId = MiniJson.Str(m, "member_id"), CharacterId = MiniJson.Str(m, "character_id"),
                        Name = MiniJson.Str(m, "name"), Mood = MiniJson.Str(m, "mood"), Lines = MiniJson.Int(m, "lines"),
                    };
                    var attrs = MiniJson.Get(m, "attributes") as Dictionary<string, object>;
                    if (attrs != null) foreach (var kv in attrs) member.Attributes[kv.Key] = Convert.ToInt32(kv.Value);
                    info.Members.Add(member);
                }
            var transcript = MiniJson.Get(o, "transcript") as List<object>;
            if (transcript != null)
                foreach (object item in transcript)
                {
                    var l = item as Dictionary<string, object>;
                    if (l == null) continue;
                    info.Transcript.Add(new NpcSceneLine
                    {
                        SpeakerId = MiniJson.Str(l, "speaker_id"), Speaker = MiniJson.Str(l, "speaker"), Text = MiniJson.Str(l, "text"),
                    });
                }
            return info;
        }

        public void DeleteScene(string sceneId)
        {
            Check(NativeMethods.npc_scene_delete(Handle, Utf8.Z(sceneId)));
        }

        /// <summary>A member joins mid-scene (it hears the lines from now on).</summary>
        public void JoinScene(string sceneId, NpcSceneMemberSpec member)
        {
            if (member == null) throw new ArgumentNullException("member");
            var handle = Handle;
            using (var strings = new NativeStrings())
            {
                var m = MemberStruct(member, strings);
                Check(NativeMethods.npc_scene_join(handle, Utf8.Z(sceneId), ref m));
            }
        }

        /// <summary>A member leaves (its lines stay in the transcript).</summary>
        public void LeaveScene(string sceneId, string memberId)
        {
            Check(NativeMethods.npc_scene_leave(Handle, Utf8.Z(sceneId), Utf8.Z(memberId)));
        }

        /// <summary>Steer one member for the rest of the scene. clear: drop its earlier steering first.</summary>
        public void SteerMember(string sceneId, string memberId, string mood, string attributes = null, bool clear = false)
        {
            Check(NativeMethods.npc_scene_steer(Handle, Utf8.Z(sceneId), Utf8.Z(memberId), Utf8.Z(mood), Utf8.Z(attributes), clear ? 1 : 0));
        }

        /// <summary>The player's line. memberIds: the members addressed, in answer order (null or
        /// empty: the speaking policy picks). options.Attributes apply to the responders' lines.
        /// A running SceneContinue of the scene ends (cancelled) first.</summary>
        public NpcSceneRequest SceneSay(string sceneId, string text, IList<string> memberIds = null, SayOptions options = null)
        {
            string ids = memberIds == null || memberIds.Count == 0 ? null : string.Join(",", memberIds);
            if (options == null) options = new SayOptions();
            var handle = Handle;
            long id;
            using (var strings = new NativeStrings())
            {
                var o = SayStruct(options, strings);
                id = NativeMethods.npc_scene_say(handle, Utf8.Z(sceneId), Utf8.Z(text), Utf8.Z(ids), ref o);
            }
            return TrackScene(id, sceneId);
        }

        /// <summary>Up to `turns` (1..32) lines of members answering each other. options.Attributes
        /// must be null (steer members with SteerMember).</summary>
        public NpcSceneRequest SceneContinue(string sceneId, int turns, SayOptions options = null)
        {
            if (options == null) options = new SayOptions();
            var handle = Handle;
            long id;
            using (var strings = new NativeStrings())
            {
                var o = SayStruct(options, strings);
                id = NativeMethods.npc_scene_continue(handle, Utf8.Z(sceneId), turns, ref o);
            }
            return TrackScene(id, sceneId);
        }

        /// <summary>A save-game snapshot of the scene (versioned msgpack bytes).</summary>
        public byte[] ExportScene(string sceneId)
        {
            return Bytes(NativeMethods.npc_scene_export(Handle, Utf8.Z(sceneId)));
        }

        /// <summary>Restore a scene snapshot (or an old session snapshot: a one-member scene); returns its id.</summary>
        public string ImportScene(byte[] snapshot)
        {
            if (snapshot == null) throw new ArgumentNullException("snapshot");
            return Text(NativeMethods.npc_scene_import(Handle, snapshot, (UIntPtr)snapshot.Length));
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
            lock (_lock)
            {
                _replies.Clear();
                _sceneRequests.Clear();
            }
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
            NativeMethods.EventEx x;
            int got = NativeMethods.npc_poll_ex(Handle, out x, timeoutMs > 0 ? timeoutMs : 0);
            if (got < 0) throw LastError(got);
            if (got == 0) return null;
            NativeMethods.Event ev = x.ev;
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
                SceneId = Utf8.FromPtr(x.sceneId),
                SpeakerId = Utf8.FromPtr(x.speakerId),
                Speaker = Utf8.FromPtr(x.speaker),
                Line = x.line,
            };
        }

        private NpcSceneRequest TrackScene(long id, string sceneId)
        {
            if (id <= 0) throw LastError((int)id);
            var request = new NpcSceneRequest(this, id, sceneId);
            lock (_lock) _sceneRequests[id] = request;
            return request;
        }

        private static NativeMethods.SayOptions SayStruct(SayOptions options, NativeStrings strings)
        {
            return new NativeMethods.SayOptions
            {
                attributes = strings.Add(options.Attributes), maxNewTokens = options.MaxNewTokens,
                temperature = options.Temperature, topP = options.TopP, topK = options.TopK, seed = options.Seed,
            };
        }

        private static NativeMethods.SceneMember MemberStruct(NpcSceneMemberSpec m, NativeStrings strings)
        {
            if (m == null) throw new ArgumentNullException("members", "a scene member is null");
            return new NativeMethods.SceneMember
            {
                characterId = strings.Add(m.CharacterId), memberId = strings.Add(m.MemberId), name = strings.Add(m.Name),
                mood = strings.Add(m.Mood), attributes = strings.Add(m.Attributes),
            };
        }

        // "key=value" lines (npc_scene_options.context); a key or value with a line break cannot travel.
        private static string ContextString(IDictionary<string, string> context)
        {
            if (context == null || context.Count == 0) return null;
            var sb = new StringBuilder();
            foreach (var kv in context)
            {
                string value = kv.Value ?? "";
                if (kv.Key.IndexOfAny(new[] { '\n', '=' }) >= 0 || value.IndexOf('\n') >= 0)
                    throw new ArgumentException("context key '" + kv.Key + "': keys cannot hold '=' or line breaks, values cannot hold line breaks", "context");
                sb.Append(kv.Key).Append('=').Append(value).Append('\n');
            }
            return sb.ToString();
        }

        private void Raise(NpcEvent e)
        {
            if (EventReceived != null) EventReceived(e);
            switch (e.Type)
            {
                case NpcEventType.Delta: if (ReplyDelta != null) ReplyDelta(e); break;
                case NpcEventType.Done: if (ReplyDone != null) ReplyDone(e); break;
                case NpcEventType.Error: if (ReplyError != null) ReplyError(e); break;
                case NpcEventType.SceneEnd: if (SceneEnded != null) SceneEnded(e); break;
            }
            Route(e);
        }

        private void Route(NpcEvent e)
        {
            NpcReply reply;
            NpcSceneRequest scene;
            lock (_lock)
            {
                if (_sceneRequests.TryGetValue(e.RequestId, out scene))
                {
                    if (e.Type == NpcEventType.SceneEnd || e.Type == NpcEventType.Error) _sceneRequests.Remove(e.RequestId);
                    reply = null;
                }
                else
                {
                    if (!_replies.TryGetValue(e.RequestId, out reply)) return;
                    if (e.Type != NpcEventType.Delta) _replies.Remove(e.RequestId);
                }
            }
            if (scene != null) scene.Dispatch(e);
            else reply.Dispatch(e);
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
