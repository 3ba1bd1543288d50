// NpcScene: several NpcCharacters and the player in one conversation (a tavern table).
// List the members in the Inspector; call Say / SayTo / Continue from gameplay code. Each line
// arrives on the scene's UnityEvents with its speaker, and on the speaking NpcCharacter's own
// onReplyDelta / onReply (so per-NPC speech bubbles keep working). Thin Unity layer: the logic is
// SteerNpc.SceneConversation (Runtime/Core, engine-agnostic, tested under Mono).
using System;
using System.Collections.Generic;
using UnityEngine;
using UnityEngine.Events;

namespace SteerNpc.Unity
{
    /// <summary>(member id, text)</summary>
    [Serializable] public class NpcSceneLineEvent : UnityEvent<string, string> { }

    /// <summary>(lines produced, cancelled or interrupted)</summary>
    [Serializable] public class NpcSceneEndEvent : UnityEvent<int, bool> { }

    [AddComponentMenu("SteerNPC/NPC Scene")]
    public sealed class NpcScene : MonoBehaviour
    {
        [Tooltip("The scene's id on the server; empty = the server picks one")]
        [SerializeField] private string sceneId = "";
        [SerializeField] private string playerName = "";
        [Tooltip("The NPCs at the table; they open no sessions of their own")]
        [SerializeField] private List<NpcCharacter> members = new List<NpcCharacter>();
        [Tooltip("The speaking policy's tie-break seed; 0 = random")]
        [SerializeField] private long seed;
        [Tooltip("0 = each persona's default")]
        [SerializeField] private int maxNewTokens;
        [Tooltip("Delete the server-side scene when this object is destroyed (off: keep it for save games)")]
        [SerializeField] private bool deleteSceneOnDestroy = true;

        [Header("Events")]
        [Tooltip("A member starts a line (member id, name)")]
        public NpcSceneLineEvent onLineStarted = new NpcSceneLineEvent();
        [Tooltip("Each streamed piece of a line (member id, piece)")]
        public NpcSceneLineEvent onLineDelta = new NpcSceneLineEvent();
        [Tooltip("A member's whole line, once done (member id, line); also after a cancel")]
        public NpcSceneLineEvent onLine = new NpcSceneLineEvent();
        [Tooltip("A Say or Continue is over (lines, cancelled)")]
        public NpcSceneEndEvent onSceneEnd = new NpcSceneEndEvent();
        public NpcErrorEvent onError = new NpcErrorEvent();
        public UnityEvent onSceneReady = new UnityEvent();

        private SceneConversation _scene;
        private readonly Queue<Action> _waiting = new Queue<Action>();

        public bool IsReady { get { return _scene != null && _scene.IsCreated; } }
        public bool IsBusy { get { return _scene != null && _scene.IsBusy; } }
        public string SceneId { get { return _scene != null ? _scene.SceneId : sceneId; } }
        /// <summary>The members, as listed (joins and leaves included).</summary>
        public IList<NpcCharacter> Members { get { return members.AsReadOnly(); } }
        /// <summary>The engine-agnostic scene (null before Start).</summary>
        public SceneConversation Conversation { get { return _scene; } }

        private static SteerNpcManager Manager { get { return SteerNpcManager.GetOrCreate(); } }

        private void Awake()
        {
            // Before any Start: the members know they talk here and open no sessions.
            foreach (NpcCharacter m in members) if (m != null) m.Scene = this;
        }

        private void Start()
        {
            StartScene(null);
        }

        /// <summary>Create the scene (or restore a save-game snapshot) on a worker thread.</summary>
        public void StartScene(byte[] snapshot)
        {
            SteerNpcClient client = Manager.Client;
            if (client == null) return;
            var conversation = new SceneConversation(client, sceneId, string.IsNullOrEmpty(playerName) ? null : playerName, (ulong)seed);
            conversation.LineStarted += (id, name) => onLineStarted.Invoke(id, name);
            conversation.LineDelta += e =>
            {
                onLineDelta.Invoke(e.SpeakerId, e.Text);
                NpcCharacter m = Member(e.SpeakerId);
                if (m != null) m.RaiseSceneDelta(e.Text);
            };
            conversation.LineDone += e =>
            {
                onLine.Invoke(e.SpeakerId, e.Text);
                NpcCharacter m = Member(e.SpeakerId);
                if (m != null) m.RaiseSceneLine(e.Text);
            };
            conversation.Ended += e => onSceneEnd.Invoke(e.Line, e.FinishReason == FinishReason.Cancelled);
            conversation.Failed += (code, message) => onError.Invoke(code, message);
            var specs = new List<NpcSceneMemberSpec>();
            foreach (NpcCharacter m in members) if (m != null) specs.Add(m.SceneMemberSpec());
            Manager.RunInBackground(
                c => { if (snapshot != null) conversation.Import(snapshot); else conversation.Create(specs); return true; },
                ok =>
                {
                    _scene = conversation;
                    onSceneReady.Invoke();
                    while (_waiting.Count > 0) _waiting.Dequeue()();
                },
                ReportException);
        }

        /// <summary>The player speaks to the table; the speaking policy picks who answers (a name
        /// in the line, else the last speaker). Lines said before the scene is ready are queued.</summary>
        public void Say(string text)
        {
            SayTo(text, new NpcCharacter[0]);
        }

        /// <summary>The player addresses these members; they answer in this order.</summary>
        public void SayTo(string text, params NpcCharacter[] addressed)
        {
            if (!IsReady)
            {
                _waiting.Enqueue(() => SayTo(text, addressed));
                return;
            }
            var ids = new List<string>();
            foreach (NpcCharacter m in addressed) if (m != null) ids.Add(m.MemberId);
            Run(() => _scene.Say(text, ids, new SayOptions { MaxNewTokens = maxNewTokens }));
        }

        /// <summary>Members answer each other for up to `turns` lines (ambient banter).</summary>
        public void Continue(int turns)
        {
            if (!IsReady)
            {
                _waiting.Enqueue(() => Continue(turns));
                return;
            }
            Run(() => _scene.Continue(turns, new SayOptions { MaxNewTokens = maxNewTokens }));
        }

        /// <summary>Stop what is streaming at the next step (its line ends with onLine, cancelled).</summary>
        public void Cancel()
        {
            if (_scene != null) _scene.Cancel();
        }

        /// <summary>A character joins mid-scene (it hears the lines from now on).</summary>
        public void Join(NpcCharacter member)
        {
            if (member == null || !IsReady) return;
            member.Scene = this;
            NpcSceneMemberSpec spec = member.SceneMemberSpec();
            Manager.RunInBackground(c => { _scene.Join(spec); return true; }, ok => { if (!members.Contains(member)) members.Add(member); },
                                    ReportException);
        }

        /// <summary>A character leaves (its lines stay in the transcript).</summary>
        public void Leave(NpcCharacter member)
        {
            if (member == null || !IsReady) return;
            string id = member.MemberId;
            Manager.RunInBackground(c => { _scene.Leave(id); return true; }, ok => { members.Remove(member); member.Scene = null; },
                                    ReportException);
        }

        /// <summary>Steer one member for the rest of the scene.</summary>
        public void SetMemberMood(NpcCharacter member, string mood, string attributes = null)
        {
            if (member == null || !IsReady) return;
            string id = member.MemberId;
            Manager.RunInBackground(c => { _scene.Steer(id, mood, attributes); return true; }, null, ReportException);
        }

        /// <summary>A save-game snapshot of the scene (blocking; call it at save time).</summary>
        public byte[] ExportScene()
        {
            return IsReady ? _scene.Export() : null;
        }

        private void OnDestroy()
        {
            if (_scene == null) return;
            _scene.Cancel();
            SteerNpcManager manager = SteerNpcManager.Instance;
            if (deleteSceneOnDestroy && IsReady && manager != null && manager.Client != null)
            {
                SceneConversation scene = _scene;
                manager.RunInBackground(c => { scene.Delete(); return true; }, null);
            }
        }

        private NpcCharacter Member(string memberId)
        {
            foreach (NpcCharacter m in members) if (m != null && m.MemberId == memberId) return m;
            return null;
        }

        private void Run(Action start)
        {
            try { start(); }
            catch (SteerNpcException e) { onError.Invoke(e.StatusCode, e.Message); }
        }

        private void ReportException(Exception e)
        {
            var s = e as SteerNpcException;
            onError.Invoke(s != null ? s.StatusCode : StatusCodes.Internal, e.Message);
        }
    }
}
