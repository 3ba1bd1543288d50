// SceneConversation: the engine-agnostic logic of Unity's NpcScene component (and of any engine
// that wants a table of NPCs): one scene on the server, its members, the request streaming now,
// and each line's events with its speaker. No UnityEngine here; tested under Mono.
//
//   var scene = new SceneConversation(client, "tavern", "Ayla");
//   scene.Create(new[] { new NpcSceneMemberSpec("brom"), new NpcSceneMemberSpec("marta") });  // blocking
//   scene.LineDelta += e => bubbles[e.SpeakerId].Append(e.Text);
//   scene.Say("Brom, what do you think?");      // Brom answers (named in the line)
//   scene.Continue(3);                           // three lines of banter; scene.Cancel() ends it
//   client.Poll();                               // once a frame: every event is raised there
//
// Blocking calls (Create, Join, Leave, Steer, Export, Import, Refresh, Delete) wait at most the
// client's DefaultDeadlineMs: call them at load time or on a worker thread. Say, Continue and
// Cancel never block. Events are raised by client.Poll(), on the thread that polls.
using System;
using System.Collections.Generic;

namespace SteerNpc
{
    public sealed class SceneConversation
    {
        private readonly SteerNpcClient _client;
        private readonly object _lock = new object();
        private readonly List<string> _members = new List<string>();
        private NpcSceneRequest _current;

        /// <summary>A member starts a line (member id, the name it speaks under).</summary>
        public event Action<string, string> LineStarted;
        /// <summary>A piece of a member's line (e.SpeakerId, e.Speaker, e.Text).</summary>
        public event Action<NpcEvent> LineDelta;
        /// <summary>A member's line is done (e.Text: the whole line; FinishReason.Cancelled when cut off).</summary>
        public event Action<NpcEvent> LineDone;
        /// <summary>A Say or Continue is over (e.Line: lines it produced; e.FinishReason: Cancelled when
        /// cancelled or interrupted by a new Say).</summary>
        public event Action<NpcEvent> Ended;
        /// <summary>A Say or Continue failed on the server (status code, message).</summary>
        public event Action<int, string> Failed;

        public SceneConversation(SteerNpcClient client, string sceneId = null, string playerName = null, ulong seed = 0,
                                 IDictionary<string, string> context = null)
        {
            if (client == null) throw new ArgumentNullException("client");
            _client = client;
            SceneId = string.IsNullOrEmpty(sceneId) ? null : sceneId;
            PlayerName = playerName;
            Seed = seed;
            Context = context;
        }

        /// <summary>The scene's id (null until Create or Import when none was chosen).</summary>
        public string SceneId { get; private set; }
        public string PlayerName { get; private set; }
        public ulong Seed { get; private set; }
        public IDictionary<string, string> Context { get; private set; }
        public bool IsCreated { get; private set; }

        /// <summary>The member ids present, in joining order.</summary>
        public IList<string> Members { get { lock (_lock) return _members.ToArray(); } }

        /// <summary>The Say or Continue streaming now (or the last one).</summary>
        public NpcSceneRequest Current { get { return _current; } }
        public bool IsBusy { get { NpcSceneRequest c = _current; return c != null && !c.IsFinished; } }

        // ---- blocking ------------------------------------------------------------------------------

        /// <summary>Create the scene on the server with these members.</summary>
        public void Create(IList<NpcSceneMemberSpec> members)
        {
            string id = _client.CreateScene(SceneId, members ?? new NpcSceneMemberSpec[0], PlayerName, Context, Seed);
            lock (_lock)
            {
                SceneId = id;
                _members.Clear();
                if (members != null) foreach (NpcSceneMemberSpec m in members) _members.Add(m.EffectiveMemberId);
                IsCreated = true;
            }
        }

        public void Join(NpcSceneMemberSpec member)
        {
            _client.JoinScene(RequireScene(), member);
            lock (_lock) _members.Add(member.EffectiveMemberId);
        }

        public void Leave(string memberId)
        {
            _client.LeaveScene(RequireScene(), memberId);
            lock (_lock) _members.Remove(memberId);
        }

        /// <summary>Steer one member for the rest of the scene (clear: drop its earlier steering first).</summary>
        public void Steer(string memberId, string mood, string attributes = null, bool clear = false)
        {
            _client.SteerMember(RequireScene(), memberId, mood, attributes, clear);
        }

        /// <summary>A save-game snapshot of the scene.</summary>
        public byte[] Export()
        {
            return _client.ExportScene(RequireScene());
        }

        /// <summary>Restore a snapshot (it replaces the scene of that id); members come from the server.</summary>
        public void Import(byte[] snapshot)
        {
            string id = _client.ImportScene(snapshot);
            lock (_lock)
            {
                SceneId = id;
                IsCreated = true;
            }
            Refresh();
        }

        /// <summary>Re-read the members from the server; returns the scene.</summary>
        public NpcSceneInfo Refresh(bool includeTranscript = false)
        {
            NpcSceneInfo info = _client.GetScene(RequireScene(), includeTranscript);
            lock (_lock)
            {
                _members.Clear();
                foreach (NpcSceneMemberInfo m in info.Members) _members.Add(m.MemberId);
            }
            return info;
        }

        public void Delete()
        {
            if (!IsCreated) return;
            _client.DeleteScene(RequireScene());
            lock (_lock)
            {
                IsCreated = false;
                _members.Clear();
            }
        }

        // ---- non-blocking ---------------------------------------------------------------------------

        /// <summary>The player's line; `addressed`: member ids that answer, in order (none: the
        /// speaking policy picks). A running Continue ends (cancelled) first, on the server.</summary>
        public NpcSceneRequest Say(string text, params string[] addressed)
        {
            return Say(text, addressed, null);
        }

        public NpcSceneRequest Say(string text, IList<string> addressed, SayOptions options)
        {
            return Track(_client.SceneSay(RequireScene(), text, addressed, options));
        }

        /// <summary>Up to `turns` lines of members answering each other.</summary>
        public NpcSceneRequest Continue(int turns, SayOptions options = null)
        {
            return Track(_client.SceneContinue(RequireScene(), turns, options));
        }

        /// <summary>Stop what is streaming at the next step; false when nothing is.</summary>
        public bool Cancel()
        {
            NpcSceneRequest c = _current;
            return c != null && c.Cancel();
        }

        private NpcSceneRequest Track(NpcSceneRequest request)
        {
            _current = request;
            string speaking = null;
            request.Delta += e =>
            {
                if (speaking != e.SpeakerId)
                {
                    speaking = e.SpeakerId;
                    if (LineStarted != null) LineStarted(e.SpeakerId, e.Speaker);
                }
                if (LineDelta != null) LineDelta(e);
            };
            request.LineDone += e =>
            {
                if (speaking != e.SpeakerId && LineStarted != null) LineStarted(e.SpeakerId, e.Speaker);  // a line without deltas
                speaking = null;
                if (LineDone != null) LineDone(e);
            };
            request.Ended += e => { if (Ended != null) Ended(e); };
            request.Error += e => { if (Failed != null) Failed(e.StatusCode, e.Text); };
            return request;
        }

        private string RequireScene()
        {
            if (!IsCreated || SceneId == null)
                throw new InvalidOperationException("the scene is not created yet (call Create or Import first)");
            return SceneId;
        }
    }
}
