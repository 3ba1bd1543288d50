// P/Invoke declarations over the SteerNPC C ABI (engine_bridges/native/include/steernpc/steernpc.h).
// Engine-agnostic: no UnityEngine here, so this compiles with plain mcs / csc and runs under Mono.
//
// Marshalling rules used throughout:
//   * strings go in as NUL-terminated UTF-8 byte[] (never the platform's ANSI code page);
//   * structs are blittable (ints, floats, IntPtr) and laid out exactly as in the C header;
//   * strings coming out of an event are read with Utf8.FromPtr right away: they belong to the
//     native library and stay valid only until the next npc_poll on the same thread;
//   * calls that return text or bytes return an npc_result* (ResultHandle): the whole answer of
//     one RPC, copied out and freed with npc_result_free; no call is ever repeated to size a buffer;
//   * no callbacks cross the boundary: nothing native ever calls into managed code.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace SteerNpc
{
    internal static class NativeMethods
    {
#if (UNITY_IOS || UNITY_WEBGL) && !UNITY_EDITOR
        internal const string Lib = "__Internal";  // statically linked (libsteernpc_static.a)
#else
        internal const string Lib = "steernpc";    // steernpc.dll / libsteernpc.so / libsteernpc.dylib
#endif

        // Layout of npc_client_options (48 bytes on 64-bit).
        [StructLayout(LayoutKind.Sequential)]
        internal struct ClientOptions
        {
            public IntPtr target;
            public IntPtr apiKey;
            public IntPtr rootCertsPem;
            public int useTls;
            public int defaultDeadlineMs;
            public int sayDeadlineMs;
            public int maxReconnectBackoffMs;
            public int waitForReady;
        }

        // Layout of npc_event (72 bytes on 64-bit).
        [StructLayout(LayoutKind.Sequential)]
        internal struct Event
        {
            public long requestId;
            public int type;
            public int finishReason;
            public int statusCode;
            public int promptTokens;
            public int completionTokens;
            public float serverTtftMs;
            public float serverTotalMs;
            public int textLen;
            public IntPtr text;
            public IntPtr attributes;
            public IntPtr sessionId;
            public IntPtr interactionId;
        }

        // Layout of npc_event_ex (104 bytes on 64-bit): npc_event, then the scene fields.
        [StructLayout(LayoutKind.Sequential)]
        internal struct EventEx
        {
            public Event ev;
            public IntPtr sceneId;
            public IntPtr speakerId;
            public IntPtr speaker;
            public int line;
            public int reserved;
        }

        // Layout of npc_scene_member (40 bytes on 64-bit).
        [StructLayout(LayoutKind.Sequential)]
        internal struct SceneMember
        {
            public IntPtr characterId;
            public IntPtr memberId;
            public IntPtr name;
            public IntPtr mood;
            public IntPtr attributes;
        }

        // Layout of npc_scene_options (48 bytes on 64-bit).
        [StructLayout(LayoutKind.Sequential)]
        internal struct SceneOptions
        {
            public IntPtr sceneId;
            public IntPtr playerName;
            public IntPtr context;
            public ulong seed;
            public IntPtr members;  // npc_scene_member[memberCount]
            public int memberCount;
        }

        // Layout of npc_say_options (32 bytes on 64-bit).
        [StructLayout(LayoutKind.Sequential)]
        internal struct SayOptions
        {
            public IntPtr attributes;
            public int maxNewTokens;
            public float temperature;
            public float topP;
            public int topK;
            public ulong seed;
        }

        // Layout of npc_session_options.
        [StructLayout(LayoutKind.Sequential)]
        internal struct SessionOptions
        {
            public IntPtr characterId;
            public IntPtr sessionId;
            public IntPtr mood;
            public IntPtr attributes;
            public IntPtr playerName;
        }

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr npc_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr npc_last_error();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_last_error_code();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ClientHandle npc_client_create(ref ClientOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void npc_client_destroy(IntPtr client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_client_state(ClientHandle client, int tryToConnect);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_client_wait_connected(ClientHandle client, int timeoutMs);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_result_status(ResultHandle result);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr npc_result_data(ResultHandle result);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern UIntPtr npc_result_size(ResultHandle result);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void npc_result_free(IntPtr result);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_list_characters(ClientHandle client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_session_create_ex(ClientHandle client, ref SessionOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_session_get(ClientHandle client, byte[] sessionId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_session_delete(ClientHandle client, byte[] sessionId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_steer_ex(ClientHandle client, byte[] sessionId, byte[] mood, byte[] attributes, int clear);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_session_export(ClientHandle client, byte[] sessionId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_session_import(ClientHandle client, byte[] data, UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern long npc_say_ex(ClientHandle client, byte[] sessionId, byte[] text, ref SayOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_cancel(ClientHandle client, long requestId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_poll(ClientHandle client, out Event ev);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_poll_wait(ClientHandle client, out Event ev, int timeoutMs);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_pending(ClientHandle client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_poll_ex(ClientHandle client, out EventEx ev, int timeoutMs);

        // ---- scenes ----

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_scene_create(ClientHandle client, ref SceneOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_scene_get(ClientHandle client, byte[] sceneId, int includeTranscript);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_scene_delete(ClientHandle client, byte[] sceneId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_scene_join(ClientHandle client, byte[] sceneId, ref SceneMember member);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_scene_leave(ClientHandle client, byte[] sceneId, byte[] memberId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int npc_scene_steer(ClientHandle client, byte[] sceneId, byte[] memberId, byte[] mood, byte[] attributes, int clear);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern long npc_scene_say(ClientHandle client, byte[] sceneId, byte[] text, byte[] memberIds, ref SayOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern long npc_scene_continue(ClientHandle client, byte[] sceneId, int turns, ref SayOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_scene_export(ClientHandle client, byte[] sceneId);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ResultHandle npc_scene_import(ClientHandle client, byte[] data, UIntPtr len);
    }

    /// <summary>Owns an npc_client*; npc_client_destroy runs exactly once, even from the finalizer.</summary>
    internal sealed class ClientHandle : SafeHandle
    {
        public ClientHandle() : base(IntPtr.Zero, true) { }

        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        protected override bool ReleaseHandle()
        {
            NativeMethods.npc_client_destroy(handle);
            return true;
        }
    }

    /// <summary>Owns an npc_result*; npc_result_free runs exactly once, even from the finalizer.</summary>
    internal sealed class ResultHandle : SafeHandle
    {
        public ResultHandle() : base(IntPtr.Zero, true) { }

        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        /// <summary>The value (or, when Status is not Ok, the error message) as bytes.</summary>
        public byte[] Bytes()
        {
            if (IsInvalid) return new byte[0];
            int size = checked((int)(ulong)NativeMethods.npc_result_size(this));
            var bytes = new byte[size];
            if (size > 0) Marshal.Copy(NativeMethods.npc_result_data(this), bytes, 0, size);
            return bytes;
        }

        /// <summary>npc_result_status: 0 (Ok) or the failure's status code.</summary>
        public int Status { get { return IsInvalid ? StatusCodes.Internal : NativeMethods.npc_result_status(this); } }

        protected override bool ReleaseHandle()
        {
            NativeMethods.npc_result_free(handle);
            return true;
        }
    }

    /// <summary>UTF-8 helpers for the C ABI.</summary>
    internal static class Utf8
    {
        /// <summary>NUL-terminated UTF-8, or null for null.</summary>
        public static byte[] Z(string s)
        {
            if (s == null) return null;
            int n = Encoding.UTF8.GetByteCount(s);
            var bytes = new byte[n + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, bytes, 0);
            return bytes;
        }

        public static string FromPtr(IntPtr p, int length = -1)
        {
            if (p == IntPtr.Zero) return string.Empty;
            if (length < 0)
            {
                length = 0;
                while (Marshal.ReadByte(p, length) != 0) length++;
            }
            if (length == 0) return string.Empty;
            var bytes = new byte[length];
            Marshal.Copy(p, bytes, 0, length);
            return Encoding.UTF8.GetString(bytes);
        }
    }

    /// <summary>Unmanaged UTF-8 strings for pointer fields of option structs; freed on Dispose.</summary>
    internal sealed class NativeStrings : IDisposable
    {
        private readonly System.Collections.Generic.List<IntPtr> _allocated = new System.Collections.Generic.List<IntPtr>();

        public IntPtr Add(string s)
        {
            if (s == null) return IntPtr.Zero;
            byte[] bytes = Utf8.Z(s);
            IntPtr p = Marshal.AllocHGlobal(bytes.Length);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            _allocated.Add(p);
            return p;
        }

        /// <summary>An unmanaged copy of a blittable struct array (for pointer fields such as
        /// npc_scene_options.members); freed on Dispose.</summary>
        public IntPtr AddArray<T>(T[] items) where T : struct
        {
            if (items == null || items.Length == 0) return IntPtr.Zero;
            int size = Marshal.SizeOf(typeof(T));
            IntPtr p = Marshal.AllocHGlobal(size * items.Length);
            _allocated.Add(p);
            for (int i = 0; i < items.Length; i++) Marshal.StructureToPtr(items[i], new IntPtr(p.ToInt64() + i * size), false);
            return p;
        }

        public void Dispose()
        {
            foreach (IntPtr p in _allocated) Marshal.FreeHGlobal(p);
            _allocated.Clear();
        }
    }
}
